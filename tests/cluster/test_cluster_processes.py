"""Detached processes: pid files, logs, telling a live process from a dead (or foreign) one."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from bidfilter.cluster.processes import (
    is_ours,
    is_running,
    read_pid,
    signal_process,
    spawn_detached,
    wait_exited,
)


def test_spawn_writes_pid_and_log_and_detaches(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    pid = spawn_detached(argv, log=tmp_path / "logs" / "child.log", pid_file=tmp_path / "c.pid")
    try:
        assert _first_line(tmp_path / "logs" / "child.log") == "started"
        assert read_pid(tmp_path / "c.pid") == pid
        assert os.getsid(pid) == pid  # a session of its own: a terminal's Ctrl-C misses it
        assert is_running(pid) and is_ours(pid, argv)
        assert not is_ours(pid, [*argv[:-1], "something else"])
    finally:
        signal_process(pid, signal.SIGTERM)
    # Our own child: without reaping it would linger as a zombie, which is not running.
    assert wait_exited([pid], 10) == []
    assert not is_ours(pid, argv)
    assert (tmp_path / "logs" / "child.log").read_text() == "started\n"


def test_a_whole_process_group_is_signalled(tmp_path: Path) -> None:
    script = (
        "import subprocess, sys, time;"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        "print(child.pid, flush=True); time.sleep(60)"
    )
    log = tmp_path / "parent.log"
    pid = spawn_detached([sys.executable, "-c", script], log=log, pid_file=tmp_path / "p.pid")
    try:
        grandchild = int(_first_line(log))
        signal_process(pid, signal.SIGKILL, group=True)
        assert wait_exited([pid, grandchild], 10) == []
    finally:
        signal_process(pid, signal.SIGKILL, group=True)


def test_missing_or_empty_pid_files(tmp_path: Path) -> None:
    assert read_pid(tmp_path / "none.pid") is None
    (tmp_path / "empty.pid").write_text("\n")
    assert read_pid(tmp_path / "empty.pid") is None


def test_a_reused_pid_is_not_ours() -> None:
    # A pid file outlives its process; by the next `down` the pid may be another program's.
    assert is_running(1)
    assert not is_ours(1, [sys.executable, "-m", "bidfilter", "serve"])


def _first_line(log: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if "\n" in text:
            return text.split("\n", 1)[0]
        time.sleep(0.02)
    raise AssertionError(f"nothing written to {log} in 30 s")
