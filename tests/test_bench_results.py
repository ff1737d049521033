"""Published results say when they were measured, and are still true of the code: every result in bench/results/
names its commit and a hash of the sources it measured (bench/provenance.py: the bench script, the project modules
it imports directly or indirectly, the files it names); a result whose measured sources have changed since is stale
and fails here until its bench runs again. Every README paragraph that claims a measurement cites its results
file, and each figure it quotes (decimals, percentages, ratios, times) is one the cited results hold."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench import provenance

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RESULT_FILES = sorted(RESULTS.glob("*.json"))


def test_every_result_has_both_files_and_a_bench():
    assert RESULT_FILES, "bench/results holds no results"
    names = {p.stem for p in RESULT_FILES}
    assert names == {p.stem for p in RESULTS.glob("*.md")}, "a result without its .json or its .md"
    assert [p.name for p in RESULTS.iterdir() if p.is_file() and p.suffix not in (".json", ".md")] == []


@pytest.mark.parametrize("path", RESULT_FILES, ids=[p.stem for p in RESULT_FILES])
def test_result_is_measured_on_the_present_sources(path):
    res = json.loads(path.read_text())
    prov = res.get("provenance")
    assert prov, f"{path.name} does not say what it was measured on (bench/provenance.py)"
    assert re.fullmatch(r"[0-9a-f]{40}", prov["commit"]), prov["commit"]
    assert prov["script"] in prov["sources"] and (ROOT / prov["script"]).is_file()
    assert prov["sources_sha256"] == provenance.sources_digest(prov["sources"])
    changes = provenance.changes_since(prov)
    assert not changes, (f"{path.name} is stale: its measured sources changed since commit {prov['commit'][:12]} "
                         f"({', '.join(changes[:8])}{' ...' if len(changes) > 8 else ''}); run "
                         f"`.venv/bin/python {prov['script']}` again")
    assert provenance.line(prov) in path.with_suffix(".md").read_text(), f"{path.stem}.md does not say it"


def _mini_project(root: Path) -> None:
    (root / "pyproject.toml").write_text('[tool.importlinter]\nroot_packages = ["provpkg_a"]\n')
    pkg = root / "provpkg_a"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "measured.py").write_text("from provpkg_a import deep\n")
    (pkg / "deep.py").write_text("X = 1\n")
    (pkg / "unrelated.py").write_text("Y = 2\n")
    (root / "bench").mkdir()
    (root / "bench" / "helper.py").write_text("")
    (root / "bench" / "run_me.py").write_text("import helper\n\ndef main():\n    import provpkg_a.measured\n")


@pytest.fixture
def mini(tmp_path, monkeypatch):
    """A small generated project as provenance's root: a bench script, a helper beside it, a package."""
    _mini_project(tmp_path)
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_staleness_is_seen_in_what_a_bench_imports_and_only_there(mini):
    """A referee for the check above: on a small project, a change anywhere in a bench's import closure makes its
    result stale (a changed file, a new import), a change elsewhere does not."""
    prov = provenance.stamp(mini / "bench" / "run_me.py", extra=["pyproject.toml"])
    assert sorted(prov["sources"]) == ["bench/helper.py", "bench/run_me.py", "provpkg_a/__init__.py",
                                       "provpkg_a/deep.py", "provpkg_a/measured.py", "pyproject.toml"]
    assert provenance.changes_since(prov) == []
    (mini / "provpkg_a" / "unrelated.py").write_text("Y = 3\n")
    assert provenance.changes_since(prov) == []
    (mini / "provpkg_a" / "deep.py").write_text("X = 2\n")
    assert provenance.changes_since(prov) == ["~provpkg_a/deep.py"]
    (mini / "provpkg_a" / "deep.py").write_text("X = 1\nfrom provpkg_a import unrelated\n")
    assert provenance.changes_since(prov) == ["+provpkg_a/unrelated.py", "~provpkg_a/deep.py"]


# ---------------------------------------------------------------------------------------------- README figures

# a result of the present code, or one archived (bench/results/archive/: measured at an earlier commit, named in its
# provenance line, and not measured again since): a README figure must be in the file it cites either way
CITED = re.compile(r"bench/results/((?:archive/)?\w+)\.(?:md|json)")
# a figure: a decimal, a percentage, a ratio, or a number with a unit of time, memory or rate
FIGURE = re.compile(r"(?<![\w.-])(\d[\d,]*(?:\.\d+)?)(?:\s?(%|x\b|s\b|ms\b|min\b|h\b|GiB\b|MiB\b|MB\b|"
                    r"images/s\b|M\b|k\b))|(?<![\w.-])(\d+\.\d+)(?![\w.-])")
GOAL = re.compile(r"(goal|target|<=|>=|under|within|at most|at least)[^.;]{0,30}$", re.I)
# a version number, not a measurement: "Ray 2.40", "nirtorch 2.6"
VERSION = re.compile(r"\b(Python|Ray|ray|nirtorch|snntorch|SpikingJelly|spikingjelly|norse|sinabs|rockpool|nir|NIR|"
                     r"lava-nc|lava-dl|torch|timm|numpy|HDF5|nengo-loihi|Triton|triton|CUDA) $")


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks; a table's rows each count as one, and a table without citations of its own
    carries those of the text just before it (the paragraph that introduces it), appended in brackets."""
    out, before = [], ""
    for block in re.split(r"\n\s*\n", text):
        if block.lstrip().startswith("|"):
            inherited = "" if CITED.search(block) else " ".join(f"[bench/results/{n}.md]" for n in
                                                                CITED.findall(before))
            out += [ln + (" " + inherited if inherited else "") for ln in block.splitlines() if ln.strip()]
        else:
            out.append(block)
            before = block
    return out


def _numbers(text: str) -> list[float]:
    return [float(m.replace(",", "")) for m in re.findall(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?", text)
            if re.fullmatch(r"-?\d{1,3}(,\d{3})*(\.\d+)?([eE][-+]?\d+)?|-?\d+(\.\d+)?([eE][-+]?\d+)?", m)]


def _held(value: str, unit: str | None, numbers: list[float]) -> bool:
    """Is the README's figure `value` (as written, its decimals its precision) one of `numbers`, rounded as the
    README rounds it? A percentage may be stored as a fraction, a time in other units."""
    v = float(value.replace(",", ""))
    decimals = len(value.split(".")[1]) if "." in value else 0
    half = 0.5 * 10 ** -decimals + 1e-9
    scales = {"%": (1, 100), "s": (1, 1e3, 1 / 60), "ms": (1, 1e-3), "min": (1, 60), "h": (1, 3600),
              "M": (1e6,), "k": (1e3,), "GiB": (1, 2 ** 30, 1 / 1024), "MiB": (1, 2 ** 20)}.get(unit, (1,))
    return any(abs(n * k - v) <= half or abs(n / k - v) <= half for n in numbers for k in scales)


def _readme_claims():
    """The README paragraphs that claim a measurement or cite a result."""
    text = (ROOT / "README.md").read_text()
    return [p for p in _paragraphs(text) if re.search(r"\bmeasured\b", p, re.I) or CITED.search(p)]


def test_readme_measurements_cite_their_results():
    uncited = [p[:120] for p in _readme_claims() if not CITED.search(p)]
    assert not uncited, f"README paragraphs claim measurements without a bench/results file: {uncited}"


def test_readme_figures_are_in_the_results_they_cite():
    cache: dict[str, list[float]] = {}
    missing = []
    for para in _readme_claims():
        names = set(CITED.findall(para))
        for name in names:
            if name not in cache:
                assert (RESULTS / f"{name}.json").exists(), f"README cites bench/results/{name}, which does not exist"
                cache[name] = _numbers((RESULTS / f"{name}.json").read_text() + (RESULTS / f"{name}.md").read_text())
        numbers = [n for name in names for n in cache[name]]
        for m in FIGURE.finditer(para):
            value, unit = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), None)
            if GOAL.search(para[max(0, m.start() - 40):m.start()]):
                continue  # a goal or a limit, not a measurement
            if unit is None and VERSION.search(para[max(0, m.start() - 20):m.start()]):
                continue
            if not _held(value, unit, numbers):
                missing.append(f"{value}{unit or ''} (in: ...{para[max(0, m.start() - 60):m.end() + 20]}...)")
    assert not missing, "README figures not in the results they cite:\n" + "\n".join(missing)


def test_the_figure_check_can_fail():
    assert _held("98.9", "%", [0.98889]) and _held("36.8", "s", [36.79]) and _held("4,579", "x", [4579.2])
    assert not _held("98.8", "%", [0.98889]) and not _held("37", "s", [36.2])
    assert _held("5.1", "M", [5_114_880]) and not _held("5.2", "M", [5_114_880])
    para = "Ray 2.40 retries; measured 2.40 s in bench/results/x.md"
    flagged = [m.group(0) for m in FIGURE.finditer(para)
               if not (m.group(2) is None and VERSION.search(para[max(0, m.start() - 20):m.start()]))]
    assert flagged == ["2.40 s"]


def test_comments_and_docstrings_do_not_make_a_result_stale(mini):
    prov = provenance.stamp(mini / "bench" / "run_me.py")
    deep = mini / "provpkg_a" / "deep.py"
    deep.write_text('"""A docstring."""\n\n# a comment\nX = (\n    1)\n\n\ndef f():\n    """Its doc."""\n')
    assert provenance.changes_since(prov) == ["~provpkg_a/deep.py"]  # f is new code
    prov = provenance.stamp(mini / "bench" / "run_me.py")
    deep.write_text('"""Another docstring."""\nX = 1  # another comment\n\n\ndef f():\n    """Other doc."""\n')
    assert provenance.changes_since(prov) == []
    deep.write_text('X = 2\n\n\ndef f():\n    pass\n')
    assert provenance.changes_since(prov) == ["~provpkg_a/deep.py"]


def test_a_source_changed_during_the_measurement_is_refused(mini):
    import time
    started = time.time()
    provenance.stamp(mini / "bench" / "run_me.py", since=started + 60)  # nothing modified since
    (mini / "provpkg_a" / "deep.py").write_text("X = 3\n")
    with pytest.raises(provenance.SourcesChangedError, match="provpkg_a/deep.py"):
        provenance.stamp(mini / "bench" / "run_me.py", since=started - 1)


def test_the_process_start_is_now_for_a_new_process():
    import subprocess
    import sys
    import time
    t = time.time()
    out = subprocess.run([sys.executable, "-c", "from bench import provenance; print(provenance.process_start())"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert t - 2 <= float(out) <= time.time() + 1  # clock ticks are 10 ms; btime is whole seconds
