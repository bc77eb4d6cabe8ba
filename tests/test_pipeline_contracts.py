"""Contracts between dvc.yaml, the stage scripts, the library and the params files.

1. Every source file a stage executes (its script and the transitive `deltalab` imports, package
   `__init__.py` files and imports inside functions included) is covered by the stage's deps, and
   no `src/`/`stages/` dep is stale. Exception: src/deltalab/__init__.py while it only defines
   `__version__`.
2. Every field of every schema section (deltalab.config.Params) is explicit in params.yaml and in
   every configs/*.yaml: DVC only tracks what the params file says, so a schema default changes
   results invisibly. An optional nested section (`data.tulu`) must appear, possibly as null.
   The converse (no unknown keys) is enforced by the schema itself (extra="forbid").
3. Every `params:` entry of dvc.yaml names a schema key path, and every `params.<section>[.<key>]`
   a stage reads is declared (static scan of its script, the top level of the library modules
   it imports and the library functions reachable from those by name).

The checkers live in tests/pipeline_contracts.py and are themselves tested below on a synthetic
package and dvc.yaml in tmp_path.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from deltalab.config import Params
from tests.pipeline_contracts import (
    check_declared_params_exist,
    check_stage_deps,
    check_stage_params,
    executed_files,
    missing_keys,
    stage_script,
)

ROOT = Path(__file__).resolve().parents[1]
PARAM_FILES = [ROOT / "params.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]


def _dvc() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _report(title: str, problems: list[str]) -> str:
    return f"{title} ({len(problems)}):\n  " + "\n  ".join(problems)


# --------------------------------------------------------------------------------------------------
# The contracts, on the real repository
# --------------------------------------------------------------------------------------------------


def test_dvc_deps_cover_the_code_each_stage_executes():
    problems = check_stage_deps(_dvc(), ROOT)
    assert not problems, _report("dvc.yaml code deps are incomplete or stale", problems)


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_schema_key_is_explicit_in_params_file(path: Path):
    rel = path.relative_to(ROOT).as_posix()
    missing = [f"{rel}: {key}" for key in missing_keys(Params, yaml.safe_load(path.read_text()))]
    assert not missing, _report(
        f"{rel} leaves schema keys to defaults DVC cannot see; add them explicitly", missing
    )


def test_dvc_params_entries_exist_in_the_schema():
    problems = check_declared_params_exist(_dvc(), Params)
    assert not problems, _report("dvc.yaml params entries unknown to the schema", problems)


def test_dvc_params_cover_the_sections_each_stage_reads():
    problems = check_stage_params(_dvc(), ROOT, Params)
    assert not problems, _report("dvc.yaml params miss sections the stages read", problems)


# --------------------------------------------------------------------------------------------------
# The checkers themselves, on a synthetic package
# --------------------------------------------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


SYNTHETIC = {
    "src/pkg/__init__.py": '"""Doc."""\n\n__version__ = "1.0"\n',
    "src/pkg/paths.py": "",
    "src/pkg/models.py": "from .sub import helper\n",
    "src/pkg/lazy.py": "",
    "src/pkg/typing_only.py": "",
    "src/pkg/unused.py": "",
    "src/pkg/sub/__init__.py": "from pkg.sub.api import thing\n",
    "src/pkg/sub/api.py": """\
        from typing import TYPE_CHECKING
        from .. import models
        thing = 1
        if TYPE_CHECKING:
            from pkg import typing_only

        def run_it(params):
            return _inner(params)

        def _inner(params):
            return params.zeta

        def never_called(params):
            return params.omega
    """,
    "src/pkg/sub/helper.py": """\
        def later():
            import pkg.lazy
    """,
    "stages/s.py": """\
        from pkg import paths
        from pkg.sub.api import thing, run_it
        def main(params):
            return params.alpha.x, params.beta, getattr(params, "gamma"), params.alpha.method()
        run_it(None)
    """,
}
ALL_DEPS = [
    "stages/s.py",
    "src/pkg/paths.py",
    "src/pkg/models.py",
    "src/pkg/lazy.py",
    "src/pkg/sub",
]


def _synthetic_dvc(deps: list[str], params: list[object] | None = None) -> dict:
    return {
        "stages": {
            "s": {
                "matrix": {"cond": ["a", "b"]},
                "cmd": "python stages/s.py --cond ${item.cond}",
                "deps": [*deps, "models/${item.cond}/ckpt"],
                "params": params or [],
            }
        }
    }


def test_stage_script_is_found_in_cmd():
    assert stage_script("python stages/x.py --cond ${item.cond}") == "stages/x.py"
    assert stage_script("python3 -u ./stages/y.py") == "stages/y.py"
    assert stage_script("echo hi") is None


def test_executed_files_follow_relative_lazy_and_package_imports(tmp_path: Path):
    _write(tmp_path, SYNTHETIC)
    executed = executed_files(tmp_path / "stages/s.py", tmp_path / "src", "pkg")
    names = {p.relative_to(tmp_path / "src").as_posix() for p in executed.files}
    assert names == {
        "pkg/__init__.py",
        "pkg/paths.py",
        "pkg/sub/__init__.py",
        "pkg/sub/api.py",
        "pkg/models.py",  # `from .. import models`: a submodule named in a from-import
        "pkg/sub/helper.py",  # `from .sub import helper`
        "pkg/lazy.py",  # imported inside a function
    }  # typing_only (under TYPE_CHECKING) and unused are not executed


def test_check_stage_deps_accepts_complete_deps(tmp_path: Path):
    _write(tmp_path, SYNTHETIC)
    assert check_stage_deps(_synthetic_dvc(ALL_DEPS), tmp_path, "pkg") == []


def test_check_stage_deps_reports_missing_stale_and_script(tmp_path: Path):
    _write(tmp_path, SYNTHETIC)
    deps = [d for d in ALL_DEPS if d not in ("src/pkg/lazy.py", "stages/s.py")]
    problems = check_stage_deps(_synthetic_dvc([*deps, "src/pkg/gone.py"]), tmp_path, "pkg")
    assert any("src/pkg/lazy.py" in p and "stage 's'" in p for p in problems), problems
    assert any("stale dep 'src/pkg/gone.py'" in p for p in problems), problems
    assert any("stage script stages/s.py" in p for p in problems), problems
    assert len(problems) == 3, problems


def test_check_stage_deps_counts_a_package_init_with_code(tmp_path: Path):
    _write(tmp_path, {**SYNTHETIC, "src/pkg/__init__.py": "X = 1\n"})
    problems = check_stage_deps(_synthetic_dvc(ALL_DEPS), tmp_path, "pkg")
    assert [p for p in problems if "src/pkg/__init__.py" in p] == problems != []


def test_check_stage_deps_catches_a_dep_removed_from_the_real_dvc_yaml():
    dep = "src/deltalab/models.py"
    dvc = _dvc()
    stages = [n for n, s in dvc["stages"].items() if dep in (s.get("deps") or [])]
    assert stages, f"no stage of dvc.yaml lists {dep}: pick another file for this self-test"
    before = check_stage_deps(dvc, ROOT)
    dvc["stages"][stages[0]]["deps"].remove(dep)
    added = set(check_stage_deps(dvc, ROOT)) - set(before)
    assert [p.split("  ")[0] for p in added] == [f"stage {stages[0]!r}: add to deps {dep}"]


class _Hub(BaseModel):
    name: str
    revision: str = "main"


class _Inner(BaseModel):
    x: int = 1
    method_result: int = 0


class _Root(BaseModel):
    seeds: list[int] = [0]
    alpha: _Inner = _Inner()
    beta: _Inner = _Inner()
    gamma: int = 0
    hub: _Hub | None = None


def test_missing_keys_recurses_and_accepts_explicit_null():
    assert missing_keys(_Root, {"seeds": [0], "alpha": {"x": 1}, "hub": {"name": "n"}}) == [
        "alpha.method_result",
        "beta  (whole section missing; keys: x, method_result)",
        "gamma",
        "hub.revision",
    ]
    full = {"seeds": [], "alpha": {"x": 1, "method_result": 0}, "gamma": 0, "hub": None}
    assert missing_keys(_Root, {**full, "beta": full["alpha"]}) == []
    assert missing_keys(_Root, {**full, "beta": full["alpha"], "hub": {}}) == [
        "hub.name",
        "hub.revision",
    ]
    del full["hub"]
    assert missing_keys(_Root, {**full, "beta": full["alpha"]}) == [
        "hub  (optional section: write `hub: null` or the section)"
    ]


class _Reads(_Root):
    zeta: int = 0  # read by a library function the stage calls (through another one)
    omega: int = 0  # read only by a library function nobody calls


def test_check_stage_params_reads_sections_and_dotted_keys(tmp_path: Path):
    _write(tmp_path, SYNTHETIC)
    full = ["alpha", "beta", "gamma", "zeta"]
    assert check_stage_params(_synthetic_dvc(ALL_DEPS, full), tmp_path, _Reads, "pkg") == []
    # `alpha.x` covers params.alpha.x but not params.alpha.method() (a whole-section read)
    problems = check_stage_params(
        _synthetic_dvc(ALL_DEPS, ["alpha.x", "beta"]), tmp_path, _Reads, "pkg"
    )
    assert [p.split("  ")[0] for p in problems] == [
        "stage 's': add 'alpha' to its params",
        "stage 's': add 'gamma' to its params",
        "stage 's': add 'zeta' to its params",
    ]
    assert "stages/s.py:4" in problems[0]
    assert "src/pkg/sub/api.py:11" in problems[2]
    # without the transitive scan only the stage script counts
    problems = check_stage_params(
        _synthetic_dvc(ALL_DEPS, ["alpha", "beta", "gamma"]), tmp_path, _Reads, "pkg", "src", False
    )
    assert problems == []


def test_check_declared_params_exist():
    dvc = _synthetic_dvc([], ["alpha", "alpha.x", "alpha.y", "delta", {"params.yaml": ["gamma.z"]}])
    assert check_declared_params_exist(dvc, _Root) == [
        "stage 's': params entry 'alpha.y' is not in the schema ('y' is not a field of alpha)",
        "stage 's': params entry 'delta' is not in the schema ('delta' is not a field of "
        "<top level>)",
        "stage 's': params entry 'gamma.z' is not in the schema ('z' is not a field of gamma)",
    ]
