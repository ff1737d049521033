"""What every console script shares: typed user errors become one line on stderr and a nonzero exit code,
with the traceback only under --debug.

Exit codes: 0 success; 2 (EXIT_USER_ERROR) a bad input, option or file (UserError and the usual file errors),
and also an output that cannot be written because of the environment: disk full (ENOSPC), quota exceeded
(EDQUOT), read-only file system (EROFS), no permission (EACCES, EPERM), file too large (EFBIG) or an I/O error
(EIO), reported as `PROG: error: cannot write PATH: REASON; ...` (every output is written atomically, so the
destination is left as it was); 3 (EXIT_INTERNAL_ERROR) anything unexpected; 130 Ctrl-C. Commands may add
their own (spk-parity: 1 when agreement is below the thresholds)."""
from __future__ import annotations

import argparse
import errno
import sys
import traceback
from typing import Callable, Sequence


class UserError(Exception):
    """An error caused by the user's input (file, option, data); reported as one line."""


EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3
# OSErrors that mean "the environment cannot take the output", not a bug: reported as one line, exit 2
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                                errno.EIO})


_WRITE_ONLY_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def describe_os_error(e: OSError) -> str:
    """One line for an environment OSError: what could not be written (`e.destination`, which the atomic
    writers set, or the file name) and why."""
    reason = " ".join(str(e.strerror or e).split())
    dest = getattr(e, "destination", None)
    if dest is not None:
        return f"cannot write {dest}: {reason}; the destination was left as it was"
    if e.errno in _WRITE_ONLY_ERRNOS:
        return (f"cannot write {e.filename if e.filename is not None else 'the output'}: {reason}; the destination "
                "was left as it was")
    return f"{e.filename}: {reason}" if e.filename is not None else reason


def default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show full tracebacks")


def run_cli(prog: str, parser: argparse.ArgumentParser, main: Callable[[argparse.Namespace], int | None],
            argv: Sequence[str] | None = None) -> int:
    args = parser.parse_args(argv)
    try:
        return int(main(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if getattr(args, "debug", False):
            traceback.print_exc()
        if e.errno in ENVIRONMENT_ERRNOS:
            print(f"{prog}: error: {describe_os_error(e)}", file=sys.stderr)
            return EXIT_USER_ERROR
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                          FileExistsError)):
            print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
            return EXIT_USER_ERROR
        print(f"{prog}: internal error: {type(e).__name__}: {' '.join(str(e).split())} (rerun with --debug for "
              "the traceback)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    except (UserError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
            FileExistsError) as e:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as e:  # noqa: BLE001 - last resort: still one line unless --debug
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"{prog}: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL_ERROR
