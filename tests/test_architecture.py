"""The layer order of docs/architecture.md, enforced by import-linter (the contracts in pyproject.toml): a
module imports only from layers below its own, at module level or inside a function."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ground", "spikformer", "convert", "hardware", "hw_backends", "sim", "analysis", "commands")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is not installed (it is in the dev extra of pyproject.toml)"
    return subprocess.run([exe, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(cwd), "PATH": str(Path(sys.executable).parent)})


def _tree_with_import(tmp_path: Path, package: str, module: str) -> Path:
    """A copy of the tree in which `package` imports `module` inside a function."""
    for p in PACKAGES:
        shutil.copytree(ROOT / p, tmp_path / p, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / package / "__init__.py", "a") as f:
        f.write(f"\n\ndef _sneaky():\n    import {module}  # noqa: F401\n")
    return tmp_path


def test_every_layer_contract_is_kept():
    res = lint_imports(ROOT)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "broken" not in res.stdout.lower().replace("0 broken", "")


def test_the_contract_names_every_top_level_package():
    text = (ROOT / "pyproject.toml").read_text()
    layers = text.split('type = "layers"', 1)[1].split("]", 1)[0]
    named = {name.strip() for layer in layers.split("[", 1)[1].split(",") for name in layer.strip(' "\n').split("|")}
    assert [p for p in PACKAGES if p not in named] == []
    found = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert found == set(PACKAGES), f"a top-level package outside the layer contract: {found ^ set(PACKAGES)}"


@pytest.mark.parametrize("low,high", [("sim", "analysis"), ("hw_backends", "sim"), ("sim", "hw_backends"),
                                      ("hardware", "sim"), ("hardware", "hw_backends"), ("convert", "hardware"),
                                      ("ground", "spikformer")])
def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path, low, high):
    """The referee catches what the layering forbids: a copy of the tree with one import that runs up (or across,
    between the independent siblings sim and hw_backends), hidden in a function, fails."""
    res = lint_imports(_tree_with_import(tmp_path, low, high))
    assert res.returncode != 0
    assert f"{low} is not allowed to import {high}" in res.stdout or f"{low} -> {high}" in res.stdout, res.stdout[-3000:]


@pytest.mark.parametrize("importer,target", [("analysis", "hw_backends.loihi.lava_run"),
                                             ("commands", "hw_backends.nir.nir_io")])
def test_a_command_or_analysis_naming_a_target_breaks_the_contract(tmp_path, importer, target):
    """commands/ and analysis/ reach a target through the registry only: importing a target's package, even in a
    function, fails the contract."""
    res = lint_imports(_tree_with_import(tmp_path, importer, target))
    assert res.returncode != 0 and "name no target" in res.stdout and "BROKEN" in res.stdout, res.stdout[-3000:]


def _imports_between_packages() -> dict:
    """{(importer package, imported package): number of distinct (module, module) direct imports}, from grimp,
    the import graph import-linter checks."""
    import grimp
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)
    counts: dict = {}
    for module in graph.modules:
        src = module.split(".")[0]
        for imported in graph.find_modules_directly_imported_by(module):
            dst = imported.split(".")[0]
            if dst != src and dst in PACKAGES:
                counts[(src, dst)] = counts.get((src, dst), 0) + 1
    return counts


def test_the_import_table_of_the_architecture_doc_is_the_code():
    """docs/architecture.md's table of imports between packages states what the code does today."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = {}
    for line in text.split("## Imports between packages", 1)[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1]
    counts = _imports_between_packages()
    expected = {p: ", ".join(f"{q} ({counts[(p, q)]})" for q in PACKAGES if (p, q) in counts) or "-"
                for p in PACKAGES}
    assert rows == expected
