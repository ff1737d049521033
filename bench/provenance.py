"""What a bench result was measured on, recorded in the result itself (its "provenance" entry): the commit, which of
the measured files differed from it, and a hash of the sources it measures. The measured sources are found, not
listed by hand: the bench script, the bench helpers it imports (files beside it, or `bench.*`), every project module
these import directly or indirectly (grimp's import graph, the one import-linter checks the layers with; a module's
parent packages too, since importing it runs their `__init__`; and the modules a measured module names in a string,
which it may import by name: the target registry's hw_backends.loihi.target), and files the bench names (a shell script it runs,
the tests it runs) or the project modules it runs as commands (`commands.parity` for spk-parity).
tests/test_bench_results.py recomputes the hash: a result whose measured sources have changed
since it was measured is stale and fails the tests until its bench is run again.

Usage in a bench: `provenance.write_result(out_dir, name, res, markdown, __file__, extra=[...])` writes both files
with the entry; a bench that re-renders a result's Markdown from its JSON uses `with_line(markdown, res["provenance"])`."""
from __future__ import annotations

import ast
import hashlib
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def project_packages() -> tuple[str, ...]:
    """The project's top-level packages: import-linter's root_packages in pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text()
    m = re.search(r"^root_packages\s*=\s*\[([^\]]*)\]", text, re.M)
    if m is None:
        raise RuntimeError("pyproject.toml has no [tool.importlinter] root_packages")
    return tuple(re.findall(r'"([^"]+)"', m.group(1)))


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imported_names(path: Path) -> tuple[set[str], set[Path]]:
    """Every module named by an import statement anywhere in the file (function bodies included), and the files
    of its relative imports (`from .helpers import x` in tests/)."""
    names: set[str] = set()
    relative: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = path.parent.joinpath(*[".."] * (node.level - 1), *(node.module or "").split("."))
            for p in [base.with_suffix(".py"), *(base / f"{a.name}.py" for a in node.names)]:
                if p.is_file():
                    relative.add(p.resolve())
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names, relative


def _modules_named_in_strings(path: Path, modules) -> set[str]:
    """Project modules a file names in a string ("hw_backends.loihi.target", "pkg.mod:function"): what it may
    import by name at run time (a registry of targets, a sandboxed call), which no import statement shows."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value.split(":")[0]
            if name in modules:
                found.add(name)
    return found


def measured_files(script: str | Path, extra=()) -> list[str]:
    """Repository-relative paths of everything the bench `script` measures (see the module's docstring)."""
    import grimp

    packages = project_packages()
    graph = grimp.build_graph(*packages, include_external_packages=False, cache_dir=None)
    script = Path(script).resolve()
    files: set[Path] = set()
    modules: set[str] = set()
    todo = [script] + [(ROOT / e).resolve() for e in extra if e.endswith(".py")]  # named Python files: scanned too
    while todo:
        path = todo.pop()
        if path in files:
            continue
        files.add(path)
        names, relative = _imported_names(path)
        todo.extend(relative)
        for name in names:
            top = name.split(".")[0]
            if top in packages:
                if name in graph.modules:
                    modules.add(name)
                elif name.rsplit(".", 1)[0] in graph.modules:  # `from pkg import name`: name is not a module
                    modules.add(name.rsplit(".", 1)[0])
            elif top in ("bench", "tests") and _module_file(name) is not None:
                todo.append(_module_file(name))
            elif "." not in name and (path.parent / f"{name}.py").is_file():  # a helper beside the script
                todo.append(path.parent / f"{name}.py")
    modules |= {e for e in extra if e in graph.modules}  # a module the bench runs as a command (spk-parity: commands.parity)
    closure: set[str] = set()
    while modules:
        m = modules.pop()
        if m in closure:
            continue
        closure.add(m)
        modules |= graph.find_upstream_modules(m) - closure
        if _module_file(m) is not None:
            modules |= _modules_named_in_strings(_module_file(m), graph.modules) - closure
        parts = m.split(".")
        modules |= {".".join(parts[:i]) for i in range(1, len(parts))} - closure
    files |= {_module_file(m) for m in closure if _module_file(m) is not None}
    for e in extra:
        if e in graph.modules:
            continue
        p = (ROOT / e).resolve()
        if p.is_dir():
            files |= {f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts}
        elif p.is_file():
            files.add(p)
        else:
            raise FileNotFoundError(f"provenance: {e} does not exist")
    files.discard(Path(__file__).resolve())  # this module records a measurement; it measures nothing
    return sorted(str(f.relative_to(ROOT)) for f in files)


def _sha(path: Path) -> str:
    """A Python file's hash is its code's: the syntax tree without docstrings, so that a change of a comment, a
    docstring or the layout, which cannot change what a bench measures, leaves its results fresh; any other file's
    hash is its bytes'."""
    if path.suffix != ".py":
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


def sources_digest(files: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{p}\0{h}\n" for p, h in sorted(files.items())).encode()).hexdigest()


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


class SourcesChangedError(RuntimeError):
    """A measured source was modified after the bench started: the result would name code it did not run."""


def process_start() -> float | None:
    """When this process started (seconds since the epoch, from Linux's /proc: boot time + the process's start
    in clock ticks; proc(5)), or None where there is no /proc."""
    import os
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime (fields 1-2 before ')')
        with open("/proc/stat") as f:
            boot = next(int(ln.split()[1]) for ln in f if ln.startswith("btime "))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def stamp(script: str | Path, extra=(), since: float | None = None) -> dict:
    """The provenance entry of a result measured now by `script`; with `since` (when the measurement started),
    refuses (SourcesChangedError) when a measured file was modified after that."""
    paths = measured_files(script, extra)
    if since is not None:
        late = [p for p in paths if (ROOT / p).stat().st_mtime > since]
        if late:
            raise SourcesChangedError(f"measured sources changed while the bench ran: {', '.join(late[:5])}; "
                                      "nothing written, run it again")
    files = {p: _sha(ROOT / p) for p in paths}
    status = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=ROOT, capture_output=True,
                            text=True).stdout  # not _git: its strip() would cut the first line's status column
    dirty = [ln[3:] for ln in status.splitlines() if ln.strip()]
    return {"commit": _git("rev-parse", "HEAD") or "unknown", "uncommitted_changes": dirty,
            "script": str(Path(script).resolve().relative_to(ROOT)), "extra": list(extra),
            "sources_sha256": sources_digest(files), "sources": files}


def changes_since(prov: dict) -> list[str]:
    """How the measured sources differ now from when `prov` was stamped: '+path' (now measured, was not),
    '-path' (no longer), '~path' (changed); empty when the result is fresh."""
    now = {p: _sha(ROOT / p) for p in measured_files(ROOT / prov["script"], prov.get("extra", ()))}
    then = prov["sources"]
    return sorted([f"+{p}" for p in now.keys() - then.keys()] + [f"-{p}" for p in then.keys() - now.keys()]
                  + [f"~{p}" for p in now.keys() & then.keys() if now[p] != then[p]])


def line(prov: dict) -> str:
    """The Markdown sentence that says what a result was measured at."""
    dirty = prov["uncommitted_changes"]
    return (f"Measured at commit {prov['commit'][:12]} by `{prov['script']}`; measured sources (the script and the "
            f"{len(prov['sources'])} files it imports or names) sha256 {prov['sources_sha256'][:16]}"
            + (f", with uncommitted changes in {', '.join(dirty)}" if dirty else ", no uncommitted changes") + ".")


def with_line(markdown: str, prov: dict) -> str:
    """A result's Markdown ending in the sentence that says what it was measured at."""
    return markdown.rstrip("\n") + "\n\n" + line(prov) + "\n"


def write_result(out_dir: str | Path, name: str, res: dict, markdown: str, script: str | Path, extra=()) -> dict:
    """Writes `<name>.json` (`res` with its provenance entry) and `<name>.md` (`markdown` and the provenance
    sentence) into `out_dir`, each atomically; returns the provenance entry."""
    import json

    from ground.atomic import write_text
    prov = stamp(script, extra, since=process_start())
    out = Path(out_dir)
    write_text(out / f"{name}.json", json.dumps({**res, "provenance": prov}, indent=1, default=str) + "\n")
    write_text(out / f"{name}.md", with_line(markdown, prov))
    return prov
