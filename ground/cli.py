"""What every console script shares: typed user errors become one line on stderr and a nonzero exit code,
with the traceback only under --debug (exit codes: see ground.errors)."""
from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable, Sequence

from .errors import ENVIRONMENT_ERRNOS, EXIT_INTERNAL_ERROR, EXIT_USER_ERROR, UserError, describe_os_error


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


def count_text(counts: dict) -> str:
    """Counts for a console line, largest first (ties by name): {"B": 1, "A": 3} -> "A 3, B 1"."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
