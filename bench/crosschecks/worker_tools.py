"""What the benchmark workers that run inside throwaway venvs (nir_interop_worker.py, nengo_placement_worker.py)
share: a per-case timeout and one-line descriptions of an exception and of where it was raised. Standard library
only, and nothing of this repository: the workers import it as their sibling file."""
from __future__ import annotations

import os
import traceback


class CaseTimeout(Exception):
    pass


def short(e: BaseException, n: int = 300) -> str:
    """The exception's type and message on one line, cut to `n` characters."""
    msg = " ".join(str(e).split())
    s = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return s if len(s) <= n else s[: n - 3] + "..."


def where(e: BaseException) -> str:
    """The innermost frame of the traceback that lies in a site-packages package (which package raised it)."""
    tb = traceback.extract_tb(e.__traceback__)
    for fr in reversed(tb):
        if "site-packages" in fr.filename:
            return f"{fr.filename.split('site-packages' + os.sep, 1)[1]}:{fr.lineno} ({fr.name})"
    return f"{os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
