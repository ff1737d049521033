"""Throwaway virtual environments for the benchmarks whose referee cannot live in our environment
(bench_nir_interop.py, bench_nengo_placement.py): finding an interpreter of the wanted Python version and saying
in one line why pip failed. Standard library only."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys


def short(s, n: int = 240) -> str:
    """`s` on one line, cut to `n` characters."""
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 3] + "..."


def find_python(version: str) -> str | None:
    """An interpreter for `version` ("3.10"): this venv's base interpreter when it matches, else python<ver> under
    ~/.pyenv/versions or on PATH (checked to run: pyenv shims exist for versions that are not selected)."""
    cands = []
    if version == f"{sys.version_info[0]}.{sys.version_info[1]}":
        base = getattr(sys, "_base_executable", None) or sys.executable
        cands.append(os.path.realpath(base))  # a venv's python is a symlink to its base interpreter
    cands += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python{version}")), reverse=True)
    cands += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}", shutil.which(f"python{version}")]
    for c in cands:
        if not c or not os.path.exists(c):
            continue
        try:
            r = subprocess.run([c, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                               text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0 and r.stdout.strip() == str(tuple(int(x) for x in version.split("."))):
            return c
    return None


def pip_error(out: str, n: int = 240) -> str:
    """The one line of pip output that says why it failed (cut to `n` characters)."""
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    for key in ("ResolutionImpossible", "No matching distribution", "requires a different Python",
                "Could not find a version", "ERROR:", "error:"):
        for ln in lines:
            if key in ln:
                return short(ln, n)
    return short(lines[-1] if lines else "pip failed", n)
