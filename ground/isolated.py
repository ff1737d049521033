"""Child processes that can be given up on: each starts in its own session (so that it and every process it forks
form one process group, pgid == its pid), is waited for under a deadline, and is ended by killing the whole group.

Three users: the sandbox's parser helper (ground.sandbox, a line protocol over pipes), the isolated Lava worker
(hw_backends.loihi.lava_run, one job to the end under a timeout) and the fuzzer's case worker
(bench/fuzzing/fuzz_readers.py, a line protocol with a watchdog). `wait_pid` is the deadline wait of a forked child
(the sandbox helper's per-call child). Linux (process groups, /proc for zombies, pidfd where available).
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import time


class IsolatedTimeout(TimeoutError):
    """The child ran past its deadline; its process group `pgid` has been killed."""

    def __init__(self, msg: str, pgid: int):
        super().__init__(msg)
        self.pgid = pgid


def start(cmd: list, *, cwd: str, env: dict | None = None, pipes: bool = False) -> subprocess.Popen:
    """`cmd` in its own session; with `pipes`, stdin and stdout are pipes (bytes) and stderr goes to /dev/null,
    otherwise all three are inherited."""
    if pipes:
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True)
    return subprocess.Popen(cmd, env=env, cwd=cwd, start_new_session=True)


def _live_members(pgid: int) -> bool | None:
    """Whether a process of group `pgid` other than a zombie exists (/proc, Linux); None without /proc."""
    try:
        pids = [d for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def group_alive(pgid: int, ignore_zombies: bool = False) -> bool:
    """Does process group `pgid` still exist? With `ignore_zombies`, a group left with zombies only (children
    whose parent has exited, waiting for init to reap them: about 1.7 s for Lava's processes on the development
    machine) counts as ended."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if ignore_zombies:
        live = _live_members(pgid)
        return True if live is None else live
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group(proc: subprocess.Popen, grace_s: float = 0.0, ignore_zombies: bool = False) -> None:
    """Ends the process group of a child started by `start` (pgid == its pid). With `grace_s` > 0: SIGTERM
    first (so that, e.g., a multiprocessing resource tracker, which ignores SIGTERM, can still unlink shared
    memory once the others are gone), then SIGKILL for whatever is left after the grace period; with 0, SIGKILL
    at once. `ignore_zombies` (after a normal exit of the child): do not wait for init to reap zombies."""
    pgid = proc.pid
    if grace_s > 0:
        if proc.poll() is None or group_alive(pgid, ignore_zombies):
            _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        while group_alive(pgid, ignore_zombies) and time.monotonic() < deadline:
            time.sleep(0.05)
    if proc.poll() is None or group_alive(pgid, ignore_zombies):
        _signal_group(pgid, signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def run_to_end(cmd: list, timeout_s: float, *, cwd: str, env: dict | None = None, grace_s: float = 5.0,
               what: str = "the child") -> int:
    """Runs `cmd` isolated (start) to its end and returns its exit status; after `timeout_s` its process group
    is killed (kill_group with `grace_s`) and IsolatedTimeout raised; an interruption (KeyboardInterrupt, ...)
    kills the group too. After a normal exit, whatever the child left running in its group is killed, without
    waiting for its zombies."""
    proc = start(cmd, cwd=cwd, env=env)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc, grace_s)
        raise IsolatedTimeout(f"{what} did not finish within {timeout_s:g} s; its processes (group {proc.pid}) "
                              f"were killed", pgid=proc.pid) from None
    except BaseException:
        kill_group(proc, grace_s)
        raise
    kill_group(proc, grace_s, ignore_zombies=True)
    return proc.returncode


class LineChild:
    """A child (start with pipes) that answers one line per request: `send` writes a line to its stdin,
    `receive` waits for its next line on stdout. Reads the pipe's descriptor directly: a buffered readline could
    take two lines at once and leave select() waiting for data it already has."""

    GONE = object()  # receive(): the child closed its stdout (it exited)

    def __init__(self, cmd: list, *, cwd: str, env: dict | None = None):
        self.proc = start(cmd, cwd=cwd, env=env, pipes=True)
        self.pid = self.proc.pid
        self._buf = b""

    def send(self, line: str) -> bool:
        """False when the child is gone (a broken pipe)."""
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except OSError:  # BrokenPipeError
            return False
        return True

    def receive(self, limit: float):
        """The child's next line (str, without its newline); None after `limit` seconds without one; GONE when
        the child has closed its stdout."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + limit
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return self.GONE
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def kill(self) -> None:
        """Kills the child's process group now and reaps the child."""
        kill_group(self.proc)

    def close(self, wait_s: float) -> None:
        """Closes the request pipe (a child that reads until end of input exits), waits up to `wait_s` seconds,
        then kills whatever is left of the group."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=wait_s)
        except Exception:  # noqa: BLE001 - a broken pipe or a timeout: killed below
            pass
        kill_group(self.proc, ignore_zombies=True)
        try:
            self.proc.stdout.close()
        except OSError:
            pass


def wait_pid(pid: int, timeout: float) -> tuple[str, int]:
    """Waits for the forked child `pid` (pidfd where available, else polling with backoff): ("exit", code),
    ("signal", number), or ("timeout", 0) after SIGKILLing it at the deadline."""
    deadline = time.monotonic() + timeout
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        delay = 0.0005
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "timeout", 0
            if pidfd is not None:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(min(delay, left))
                delay = min(delay * 2, 0.05)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    if os.WIFSIGNALED(status):
        return "signal", os.WTERMSIG(status)
    return "exit", os.WEXITSTATUS(status)
