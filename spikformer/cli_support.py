"""What every console script shares: typed user errors become one line on stderr and a nonzero exit code,
with the traceback only under --debug."""
from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable, Sequence


class UserError(Exception):
    """An error caused by the user's input (file, option, data); reported as one line."""


EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3


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
