"""Generate and check the code deps of every dvc.yaml stage from its import closure.

DVC reruns a stage only when a declared dep changes, so a stage's code deps must be exactly the
source files it executes: its script and every `deltalab` module that the script imports,
transitively (imports inside functions included, `if TYPE_CHECKING:` blocks excluded, package
`__init__.py` files that hold only a docstring and `__version__` excluded: they run no code).
A missing dep leaves stale results that `dvc status` calls up to date; a dep the stage no
longer executes reruns it for nothing.

    python tools/dvc_deps.py --check   # exit 1 and list the differences when deps are stale
    python tools/dvc_deps.py --write   # rewrite the code deps of dvc.yaml in place

Only `stages/` and `src/` entries are generated; data, model and params deps stay hand-written
(and keep their place after the code deps). Everything is static (`ast`, PyYAML): nothing of the
library is imported. tests/test_pipeline_contracts.py runs `--check`.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "deltalab"
SRC = "src"
CODE_PREFIXES = (f"{SRC}/", "stages/")


def is_templated(text: str) -> bool:
    """`${item.cond}`, `${seeds[0]}`: resolved by DVC per matrix item, so a data/model path."""
    return "${" in text


# --------------------------------------------------------------------------------------------------
# dvc.yaml
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: str
    deps: tuple[str, ...]
    params: tuple[object, ...]  # str entries (params.yaml keys) or {file: [keys]} mappings


def load_stages(dvc: Mapping) -> list[Stage]:
    """The stages of a parsed dvc.yaml (plain, `matrix` and `foreach`/`do` stages alike)."""
    stages = []
    for name, spec in (dvc.get("stages") or {}).items():
        spec = spec if isinstance(spec, Mapping) else {}
        body = spec.get("do", spec) if "foreach" in spec else spec
        cmd = body.get("cmd", "")
        if isinstance(cmd, list):
            cmd = " && ".join(cmd)
        deps = tuple(d for d in body.get("deps") or [] if isinstance(d, str))
        stages.append(Stage(name, cmd, deps, tuple(body.get("params") or [])))
    return stages


def stage_script(cmd: str) -> str | None:
    """`python stages/x.py --cond ${item.cond}` → `stages/x.py` (first `.py` after a python)."""
    try:
        tokens = shlex.split(cmd)
    except ValueError:
        tokens = cmd.split()
    seen_python = False
    for token in tokens:
        if re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", token):
            seen_python = True
        elif seen_python and token.endswith(".py"):
            return normalize(token)
    return None


def normalize(path: str) -> str:
    path = path.strip()
    while path.startswith("./"):
        path = path[2:]
    return path.rstrip("/")


def is_code_dep(dep: str) -> bool:
    return not is_templated(dep) and normalize(dep).startswith(CODE_PREFIXES)


# --------------------------------------------------------------------------------------------------
# What a script executes: static, transitive imports of one package
# --------------------------------------------------------------------------------------------------


@cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_runtime(node: ast.AST) -> Iterator[ast.AST]:
    """`ast.walk`, minus the bodies of `if TYPE_CHECKING:` (never executed at run time).

    Function bodies are included: an import inside a function runs when the function is called.
    """
    yield node
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        children: Iterable[ast.AST] = node.orelse
    else:
        children = ast.iter_child_nodes(node)
    for child in children:
        yield from _walk_runtime(child)


def module_file(src_root: Path, module: str) -> Path | None:
    """`deltalab.a.b` → src/deltalab/a/b.py or src/deltalab/a/b/__init__.py (None: not a module)."""
    base = src_root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(module: str) -> list[str]:
    """Importing `a.b.c` executes a/__init__.py, a/b/__init__.py and a/b/c.py, in that order."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imports_of(path: Path, module: str | None, src_root: Path, package: str) -> list[str]:
    """Modules of `package` executed by running the file `path` (its own top-level imports and
    those inside functions), each with its parent packages. `module` is the file's dotted name
    (None for a script outside the package: relative imports are then ignored)."""
    is_package = path.name == "__init__.py"
    found: list[str] = []

    def add(name: str) -> None:
        if name == package or name.startswith(package + "."):
            found.extend(_with_parents(name))

    for node in _walk_runtime(parse(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module is None:
                    continue
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if not (base == package or base.startswith(package + ".")):
                continue
            add(base)
            for alias in node.names:  # `from pkg.a import b`: b may be a submodule
                if alias.name != "*" and module_file(src_root, f"{base}.{alias.name}"):
                    add(f"{base}.{alias.name}")
        elif (  # importlib.import_module("pkg.x") with a literal name
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            add(node.args[0].value)
    return list(dict.fromkeys(found))


@dataclass
class Executed:
    """Files of the package a script executes; `via[file]` is one import chain that reaches it."""

    files: list[Path] = field(default_factory=list)
    via: dict[Path, list[str]] = field(default_factory=dict)


def executed_files(script: Path, src_root: Path, package: str = PACKAGE) -> Executed:
    """Breadth-first closure of `imports_of`, starting from a stage script."""
    result = Executed()
    queue: list[tuple[str, Path, list[str]]] = []
    seen: set[str] = set()

    def visit(module: str, chain: list[str]) -> None:
        if module in seen:
            return
        seen.add(module)
        path = module_file(src_root, module)
        if path is None:  # `from pkg.a import name`: a name, not a module
            return
        result.files.append(path)
        result.via[path] = [*chain, module]
        queue.append((module, path, [*chain, module]))

    for module in imports_of(script, None, src_root, package):
        visit(module, [script.name])
    while queue:
        module, path, chain = queue.pop(0)
        for imported in imports_of(path, module, src_root, package):
            visit(imported, chain)
    return result


def is_version_only_init(path: Path) -> bool:
    """A package `__init__.py` holding nothing but a docstring and `__version__ = "..."`."""
    for node in parse(path).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstring
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if [getattr(t, "id", None) for t in targets] == ["__version__"] and isinstance(
            node.value, ast.Constant
        ):
            continue
        return False
    return True


def code_deps(script: str, repo_root: Path, package: str = PACKAGE, src: str = SRC) -> list[str]:
    """The code deps a stage running `script` must declare: the script, then the package files
    it executes in path order (docstring-only `__init__.py` files left out)."""
    executed = executed_files(repo_root / script, repo_root / src, package)
    files = {
        path.relative_to(repo_root).as_posix()
        for path in executed.files
        if not (path.name == "__init__.py" and is_version_only_init(path))
    }
    return [script, *sorted(files)]


# --------------------------------------------------------------------------------------------------
# --check and --write
# --------------------------------------------------------------------------------------------------


def check(dvc: Mapping, repo_root: Path, package: str = PACKAGE, src: str = SRC) -> list[str]:
    """Every difference between the declared and the generated code deps, one line each."""
    problems = []
    for stage in load_stages(dvc):
        script = stage_script(stage.cmd)
        if script is None:
            problems.append(f"stage {stage.name!r}: no `python <script>.py` in cmd {stage.cmd!r}")
            continue
        if not (repo_root / script).is_file():
            problems.append(f"stage {stage.name!r}: stage script {script} does not exist")
            continue
        declared = {normalize(d) for d in stage.deps if is_code_dep(d)}
        wanted = code_deps(script, repo_root, package, src)
        via = executed_files(repo_root / script, repo_root / src, package).via
        for dep in wanted:
            if dep not in declared:
                chain = " -> ".join(via.get(repo_root / dep, [dep]))
                problems.append(f"stage {stage.name!r}: missing dep {dep}  (via {chain})")
        for dep in sorted(declared - set(wanted)):
            problems.append(
                f"stage {stage.name!r}: stale dep {dep} (the stage does not execute it)"
            )
    return problems


_STAGE = re.compile(r"^  ([A-Za-z_][\w-]*):\s*$")
_KEY = re.compile(r"^    ([A-Za-z_]+):")
_ITEM = re.compile(r"^      - (.+?)\s*$")


def rewrite(text: str, repo_root: Path, package: str = PACKAGE, src: str = SRC) -> str:
    """dvc.yaml text with each stage's code deps replaced by the generated ones (first in its
    `deps:` list); comments, order of the other entries and formatting are kept."""
    stages = {s.name: s for s in load_stages(yaml.safe_load(text))}
    out: list[str] = []
    stage: Stage | None = None
    in_deps = False
    for line in text.splitlines(keepends=True):
        if m := _STAGE.match(line):
            stage, in_deps = stages.get(m.group(1)), False
        elif m := _KEY.match(line):
            in_deps = m.group(1) == "deps"
            if in_deps and stage is not None and (script := stage_script(stage.cmd)):
                out.append(line)
                out += [f"      - {d}\n" for d in code_deps(script, repo_root, package, src)]
                continue
        elif in_deps and (m := _ITEM.match(line)) and is_code_dep(m.group(1)):
            continue  # regenerated above
        elif not line.startswith("      "):
            in_deps = False
        out.append(line)
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if any code dep is stale")
    mode.add_argument("--write", action="store_true", help="rewrite the code deps in place")
    parser.add_argument("--dvc-yaml", type=Path, default=ROOT / "dvc.yaml")
    args = parser.parse_args(argv)
    repo_root = args.dvc_yaml.resolve().parent
    text = args.dvc_yaml.read_text()
    if args.write:
        new = rewrite(text, repo_root)
        if new != text:
            args.dvc_yaml.write_text(new)
        text = new
    problems = check(yaml.safe_load(text), repo_root)
    for problem in problems:
        print(problem, file=sys.stderr)
    n = len(load_stages(yaml.safe_load(text)))
    print(
        f"{args.dvc_yaml.name}: code deps of {n} stages: "
        + (f"{len(problems)} difference(s)" if problems else "in sync with their import closures")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
