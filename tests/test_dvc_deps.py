"""dvc.yaml lists, for every stage, the factory_sam3 modules its script really imports (so an edit reruns the
stages it affects, and only those). Read from the source with ast: every import, also the lazy ones inside
functions, and module names given as strings (``importlib.import_module``), followed through the package;
importing a module runs its packages' ``__init__.py`` too, so those count."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "factory_sam3"
MODULE_NAME = re.compile(rf"^{PACKAGE}(\.\w+)+$")


def module_file(name: str) -> Path | None:
    path = REPO.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, module: str, tree: ast.AST | None = None) -> set[str]:
    """Module names ``path`` (the module ``module``) imports anywhere in its body (or in ``tree``, a part of it)."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree or ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_NAME.match(node.value):
            names.add(node.value)
    return {n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}


def reached_files(script: Path, names: set[str] | None = None) -> set[Path]:
    """The package files a stage script runs when it imports what it imports (or ``names``), transitively."""
    todo, seen, files = list(imported_names(script, "__main__") if names is None else names), set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # the packages above run their __init__.py
            prefix = ".".join(parts[:i])
            path = module_file(prefix)
            if path is not None and path not in files:
                files.add(path)
                todo.extend(imported_names(path, prefix))
    return files


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO).as_posix()
    return any(rel == dep or rel.startswith(dep.rstrip("/") + "/") for dep in deps)


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_deps_cover_the_modules_the_stage_imports(stage):
    entry = STAGES[stage]
    script = re.fullmatch(r"python (stages/\w+\.py)", entry["cmd"])
    assert script, f"{stage}: cmd {entry['cmd']!r} is not `python stages/<name>.py`"
    deps = [d if isinstance(d, str) else next(iter(d)) for d in entry["deps"]]
    assert script.group(1) in deps, f"{stage}: its own script is not a dep"
    missing = sorted(
        p.relative_to(REPO).as_posix() for p in reached_files(REPO / script.group(1)) if not covered(p, deps)
    )
    assert not missing, f"dvc.yaml stage {stage} imports these but does not depend on them: {missing}"


def test_the_scan_sees_lazy_and_string_imports():
    files = {p.relative_to(REPO).as_posix() for p in reached_files(REPO / "stages" / "fetch.py")}
    assert "factory_sam3/sources/roboflow.py" in files  # only named in SOURCES, imported with importlib
    assert "factory_sam3/__init__.py" in files and "factory_sam3/layout.py" in files


DATA_STAGES = ("fetch", "extract_frames", "to_coco", "to_ytvis", "validate")


@pytest.mark.parametrize("stage", DATA_STAGES)
def test_data_stages_depend_on_nothing_they_do_not_import(stage):
    """Exactly: an edit of a module a data stage does not import must not rerun it."""
    entry = STAGES[stage]
    reached = {p.relative_to(REPO).as_posix() for p in reached_files(REPO / "stages" / f"{stage}.py")}
    extra = [
        dep
        for dep in entry["deps"]
        if isinstance(dep, str)
        and dep.startswith(PACKAGE)
        and not any(r == dep or r.startswith(dep + "/") for r in reached)
    ]
    assert not extra, f"dvc.yaml stage {stage} depends on modules it does not import: {extra}"


# pretrain/dvc.yaml: every stage runs `python stage.py <stage>`, which calls the function of that name in
# factory_sam3/pretrain/stages.py; what that function imports (and the module's top level) is what the stage runs
PRETRAIN = REPO / "pretrain"
PRETRAIN_STAGES = yaml.safe_load((PRETRAIN / "dvc.yaml").read_text())["stages"]
STAGES_MODULE = "factory_sam3.pretrain.stages"


def pretrain_stage_files(stage: str) -> set[Path]:
    path = module_file(STAGES_MODULE)
    tree = ast.parse(path.read_text(), str(path))
    top = ast.Module(body=[n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))], type_ignores=[])
    (function,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == stage]
    names = imported_names(path, STAGES_MODULE, top) | imported_names(path, STAGES_MODULE, function)
    names |= {n for n in imported_names(PRETRAIN / "stage.py", "__main__") if not n.startswith(STAGES_MODULE)}
    # the helpers of stages.py the function calls import nothing lazily (checked: only the stage functions do)
    return reached_files(PRETRAIN / "stage.py", names) | {path}


@pytest.mark.parametrize("stage", sorted(PRETRAIN_STAGES))
def test_pretraining_deps_cover_the_modules_the_stage_runs(stage):
    deps = [d if isinstance(d, str) else next(iter(d)) for d in PRETRAIN_STAGES[stage]["deps"]]
    as_repo_paths = [(PRETRAIN / d).resolve().relative_to(REPO).as_posix() for d in deps]
    missing = sorted(
        p.relative_to(REPO).as_posix() for p in pretrain_stage_files(stage) if not covered(p, as_repo_paths)
    )
    assert not missing, f"pretrain/dvc.yaml stage {stage} runs these but does not depend on them: {missing}"
