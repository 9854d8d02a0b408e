"""Detached processes with pid files: start one, tell whether it still runs, stop it.

A process is started in a session of its own (it outlives the command that started it and a
Ctrl-C in that terminal does not reach it) with its output appended to a log file, and its pid
written to a pid file. Before signalling a pid read from a file, ``is_ours`` checks that the
process still runs the recorded command line: after a reboot or a crash the pid may belong to
something else by now.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

_POLL_S: Final = 0.05


def spawn_detached(argv: Sequence[str], *, log: Path, pid_file: Path) -> int:
    """Start ``argv`` (``argv[0]`` an absolute path) detached; returns its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    # posix_spawn, not subprocess: a Popen object would be left behind (and warn) for a process
    # that is meant to outlive its starter.
    pid = os.posix_spawn(
        argv[0],
        list(argv),
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )
    staging = pid_file.with_suffix(".tmp")
    staging.write_text(f"{pid}\n")
    staging.replace(pid_file)
    return pid


def read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file``, or ``None`` if there is no such file (or it holds no pid)."""
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, dead but not yet reaped, is not)."""
    # If it is our own child (started by this process), reap it when it has exited.
    with contextlib.suppress(ChildProcessError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc to tell zombies apart; kill(0) said it exists
    return stat.rpartition(")")[2].split()[0] != "Z"


def is_ours(pid: int, argv: Sequence[str]) -> bool:
    """Whether ``pid`` runs and its command line is ``argv`` (trusted as is without /proc)."""
    if not is_running(pid):
        return False
    if not Path("/proc/self").exists():
        return True  # not Linux: the pid has to do
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False  # it exited meanwhile
    return cmdline.split(b"\0")[:-1] == [os.fsencode(arg) for arg in argv]


def signal_process(pid: int, signum: signal.Signals, *, group: bool = False) -> None:
    """Send ``signum`` to ``pid`` (or to its whole process group); a process gone is no error."""
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)


def wait_exited(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` seconds for every pid to exit; returns those still running."""
    deadline = time.monotonic() + timeout
    running = [pid for pid in pids if is_running(pid)]
    while running and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        running = [pid for pid in running if is_running(pid)]
    return running
