"""The typed user error and the exit codes every console script uses (ground.cli turns errors into one line).

Exit codes: 0 success; 2 (EXIT_USER_ERROR) a bad input, option or file (UserError and the usual file errors),
and also an output that cannot be written because of the environment: disk full (ENOSPC), quota exceeded
(EDQUOT), read-only file system (EROFS), no permission (EACCES, EPERM), file too large (EFBIG) or an I/O error
(EIO), reported as `PROG: error: cannot write PATH: REASON; ...` (every output is written atomically, so the
destination is left as it was); 3 (EXIT_INTERNAL_ERROR) anything unexpected; 130 Ctrl-C. Commands may add
their own (spk-parity: 1 when agreement is below the thresholds)."""
from __future__ import annotations

import errno


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


def check_positive_ints(values: dict, error: type[Exception]) -> None:
    """Raises `error` naming the first value (by its label, e.g. a flag) that is given (not None) and is not a
    positive integer (bools refused)."""
    for label, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise error(f"{label} must be a positive integer, got {value!r}")
