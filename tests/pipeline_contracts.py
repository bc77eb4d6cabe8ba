"""Static checks of the contracts between dvc.yaml, the stage scripts, the library and params.

DVC reruns a stage only when one of its declared deps or params changes. The code deps are
generated and checked by tools/dvc_deps.py; this module checks the params half: every knob lives
in params.yaml (a schema default that is absent from params.yaml is invisible to DVC), and every
section a stage reads is declared under its `params`.

Everything here is static (`ast`, PyYAML); nothing is imported from the stage scripts or the
library except the pydantic schema passed in by the caller.
Used by tests/test_pipeline_contracts.py.
"""

from __future__ import annotations

import ast
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pydantic import BaseModel

from tools.dvc_deps import Stage, executed_files, load_stages, normalize, stage_script
from tools.dvc_deps import parse as _parse


@cache
def _parents(path: Path) -> dict[ast.AST, ast.AST]:
    tree = _parse(path)
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


PARAMS_FILE = "params.yaml"


# --------------------------------------------------------------------------------------------------
# params: every schema key explicit in every params file; every section read is declared
# --------------------------------------------------------------------------------------------------


def nested_model(annotation: object) -> type[BaseModel] | None:
    """The BaseModel of a field typed `Model` or `Model | None` (None for anything else)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [m for a in typing.get_args(annotation) if (m := nested_model(a)) is not None]
        return models[0] if len(models) == 1 else None
    return None


def missing_keys(model: type[BaseModel], data: object, prefix: str = "") -> list[str]:
    """Every field of `model` (recursively into nested sections) absent from the mapping `data`.

    The rule: each field of each section must appear explicitly. A nested section typed
    `Model | None` must appear as a key; a null value is fine (it is an explicit choice), a
    mapping is recursed into. A whole missing section is reported once, with its keys.
    """
    if not isinstance(data, Mapping):
        return []  # null / wrong type: the schema's validation reports a wrong type
    missing = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        path = f"{prefix}{key}"
        sub = nested_model(info.annotation)
        if key not in data:
            if sub is None:
                missing.append(path)
            elif info.default is None:
                missing.append(f"{path}  (optional section: write `{key}: null` or the section)")
            else:
                keys = ", ".join(f.alias or n for n, f in sub.model_fields.items())
                missing.append(f"{path}  (whole section missing; keys: {keys})")
        elif sub is not None:
            missing.extend(missing_keys(sub, data[key], f"{path}."))
    return missing


@dataclass(frozen=True)
class ParamsRead:
    section: str
    key: str | None  # None: the whole section is read (passed on, or a property / method used)
    where: str

    @property
    def entry(self) -> str:
        return self.section if self.key is None else f"{self.section}.{self.key}"


_FUNCTION = (ast.FunctionDef, ast.AsyncFunctionDef)


def _walk_region(roots: Iterable[ast.AST], skip_functions: bool) -> Iterator[ast.AST]:
    """The nodes under `roots`; with `skip_functions`, function bodies are left out (they run
    only when called, see `reachable_regions`)."""
    for root in roots:
        yield root
        for child in ast.iter_child_nodes(root):
            if skip_functions and isinstance(child, _FUNCTION):
                continue
            yield from _walk_region([child], skip_functions)


def _referenced_names(nodes: Iterable[ast.AST]) -> set[str]:
    names = set()
    for node in nodes:
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
    return names


@dataclass(frozen=True)
class Region:
    """Code that runs: a whole stage script, a module's top level, or a reachable function."""

    path: Path
    nodes: tuple[ast.AST, ...]


def reachable_regions(script: Path, library: Iterable[Path]) -> list[Region]:
    """The stage script, the top level of every library module it executes, and every library
    function reachable by name from those (`f(...)`, `mod.f(...)`, `obj.f(...)`, `callback=f`),
    transitively. Name-based, so over-approximate (two functions sharing a name both count), but
    a helper that no stage calls (`stage.require_delta_track` for the other stages) is left out.
    """
    script_tree = _parse(script)
    regions = [Region(script, tuple(_walk_region([script_tree], skip_functions=False)))]
    defs: dict[str, list[tuple[Path, ast.AST]]] = {}
    for path in library:
        tree = _parse(path)
        regions.append(Region(path, tuple(_walk_region([tree], skip_functions=True))))
        for node in ast.walk(tree):
            if isinstance(node, _FUNCTION):
                defs.setdefault(node.name, []).append((path, node))
    pending = set().union(*(_referenced_names(r.nodes) for r in regions))
    done: set[str] = set()
    while pending:
        name = pending.pop()
        done.add(name)
        for path, node in defs.get(name, []):
            nodes = tuple(_walk_region([node], skip_functions=False))
            regions.append(Region(path, nodes))
            pending |= _referenced_names(nodes) - done
    return regions


def params_reads(
    region: Region, root_model: type[BaseModel], label: str, var: str = "params"
) -> list[ParamsRead]:
    """`params.<section>[.<key>]` reads in a region, for top-level fields of `root_model` only.

    Also `getattr(params, "<section>")` with a literal name. Dynamic `getattr(params, name)` and
    aliases (`p = params`) are not seen. A read of a name that is not a field of the section
    (a property such as `effective_probes_max_new_tokens`, a method) counts as a whole-section
    read.
    """
    parents = _parents(region.path)
    fields = root_model.model_fields
    reads = []
    for node in region.nodes:
        section = None
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == var
        ):
            section = node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == var
            and isinstance(node.args[1], ast.Constant)
        ):
            section = node.args[1].value
        if section not in fields:
            continue
        key = None
        sub = nested_model(fields[section].annotation)
        parent = parents.get(node)
        if (
            sub is not None
            and isinstance(parent, ast.Attribute)
            and parent.value is node
            and parent.attr in sub.model_fields
        ):
            key = parent.attr
        reads.append(ParamsRead(section, key, f"{label}:{node.lineno}"))
    return reads


def declared_params(stage: Stage) -> list[str]:
    """The params.yaml entries of a stage (`- section`, `- section.key`, `- params.yaml: [...]`)."""
    entries: list[str] = []
    for entry in stage.params:
        if isinstance(entry, str):
            entries.append(entry)
        elif isinstance(entry, Mapping):
            for file, keys in entry.items():
                if normalize(str(file)) == PARAMS_FILE:
                    entries.extend(keys or [])
    return entries


def check_declared_params_exist(dvc: Mapping, root_model: type[BaseModel]) -> list[str]:
    """Every params entry of every stage names a key path of the schema."""
    problems = []
    for stage in load_stages(dvc):
        for entry in declared_params(stage):
            model: type[BaseModel] | None = root_model
            mapping_values: type[BaseModel] | None = None  # after a dict[str, Model] field
            for i, part in enumerate(entry.split(".")):
                if mapping_values is not None:  # a key of a mapping: any name, then its model
                    model, mapping_values = mapping_values, None
                    continue
                if model is None or part not in model.model_fields:
                    known = ".".join(entry.split(".")[:i]) or "<top level>"
                    problems.append(
                        f"stage {stage.name!r}: params entry {entry!r} is not in the schema "
                        f"({part!r} is not a field of {known})"
                    )
                    break
                annotation = model.model_fields[part].annotation
                model = nested_model(annotation)
                if typing.get_origin(annotation) is dict:
                    mapping_values = nested_model(typing.get_args(annotation)[1])
    return problems


def _is_mapping(root_model: type[BaseModel], entry: str) -> bool:
    """Whether `section.key` is a `dict[...]` field."""
    section, _, key = entry.partition(".")
    sub = nested_model(root_model.model_fields[section].annotation) if key else None
    field = sub.model_fields.get(key) if sub is not None else None
    return field is not None and typing.get_origin(field.annotation) is dict


def check_stage_params(
    dvc: Mapping,
    repo_root: Path,
    root_model: type[BaseModel],
    package: str = "deltalab",
    src: str = "src",
    transitive: bool = True,
) -> list[str]:
    """Every `params.<section>[.<key>]` a stage reads is declared under its `params`.

    A section entry covers the whole section; a dotted entry `section.key` covers that key only.
    With `transitive`, the code of the package modules the stage executes is scanned too (the
    top level, and the functions `reachable_regions` finds). Library code mostly names a
    *section* object `params` (`params.max_steps`), which is harmless because only names of
    top-level fields count; a section field that shares a top-level name could in principle be a
    false positive (none today).
    """
    src_root = repo_root / src
    problems = []
    for stage in load_stages(dvc):
        script = stage_script(stage.cmd)
        if script is None or not (repo_root / script).is_file():
            continue  # reported by check_stage_deps
        library = executed_files(repo_root / script, src_root, package).files if transitive else []
        declared = set(declared_params(stage))
        undeclared: dict[str, list[str]] = {}
        for region in reachable_regions(repo_root / script, library):
            label = region.path.relative_to(repo_root).as_posix()
            for read in params_reads(region, root_model, label):
                if read.section in declared or read.entry in declared:
                    continue
                if _is_mapping(root_model, read.entry) and any(
                    d.startswith(f"{read.entry}.") for d in declared
                ):  # a mapping read by a key chosen at run time: the stage declares its key
                    continue
                undeclared.setdefault(read.entry, []).append(read.where)
        for entry, where in sorted(undeclared.items()):
            problems.append(
                f"stage {stage.name!r}: add {entry!r} to its params  "
                f"(read at {', '.join(dict.fromkeys(where))})"
            )
    return problems
