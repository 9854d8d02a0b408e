"""A server's CPU time and memory, read from /proc for every process it is made of.

A system under test is started in a session of its own (``start_new_session``), so its
processes are the ones whose session id is the root's pid: the supervisor and its workers, an
MLServer's inference pool, helpers such as multiprocessing's resource tracker, even one that
was re-parented. CPU is ``utime + stime`` of each live process plus ``cutime + cstime`` (the
children each one reaped), in clock ticks (10 ms); memory is the peak resident set
(``VmHWM``) of each process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

_PROC: Final = Path("/proc")
_TICKS_PER_S: Final = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    name: str
    cpu_ticks: int
    peak_rss_kib: int
    rss_kib: int
    cpus_allowed: str


@dataclass(frozen=True)
class TreeSample:
    """One reading of every process of a session."""

    processes: list[ProcessSample] = field(default_factory=list)

    @property
    def cpu_seconds(self) -> float:
        return sum(p.cpu_ticks for p in self.processes) / _TICKS_PER_S

    @property
    def peak_rss_sum_mib(self) -> float:
        """The sum of every process's peak RSS (counts shared pages once per process)."""
        return sum(p.peak_rss_kib for p in self.processes) / 1024

    @property
    def peak_rss_max_mib(self) -> float:
        """The largest single process's peak RSS."""
        return max((p.peak_rss_kib for p in self.processes), default=0) / 1024

    def describe(self) -> list[dict[str, object]]:
        return [
            {
                "pid": p.pid,
                "name": p.name,
                "cpu_s": round(p.cpu_ticks / _TICKS_PER_S, 2),
                "peak_rss_mib": round(p.peak_rss_kib / 1024, 1),
                "cpus_allowed": p.cpus_allowed,
            }
            for p in self.processes
        ]


def _read_stat(pid: int) -> tuple[str, int, int] | None:
    """(comm, session id, cpu ticks incl. reaped children), or None if the process is gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces or parentheses itself.
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5): session is 6, utime..cstime are 14..17.
    session = int(fields[3])
    ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return name, session, ticks


def _read_status(pid: int) -> tuple[int, int, str]:
    """(VmHWM KiB, VmRSS KiB, Cpus_allowed_list); zeros for a process gone meanwhile."""
    peak = rss = 0
    allowed = ""
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "VmHWM":
                peak = int(value.split()[0])
            elif key == "VmRSS":
                rss = int(value.split()[0])
            elif key == "Cpus_allowed_list":
                allowed = value.strip()
    except OSError:
        pass
    return peak, rss, allowed


def session_processes(session: int) -> list[int]:
    """The pids of every live process in ``session``."""
    pids = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read_stat(int(entry.name))
        if stat is not None and stat[1] == session:
            pids.append(int(entry.name))
    return sorted(pids)


def sample_session(session: int) -> TreeSample:
    """CPU and memory of every process of ``session`` (the root pid of a new session)."""
    processes = []
    for pid in session_processes(session):
        stat = _read_stat(pid)
        if stat is None:
            continue
        peak, rss, allowed = _read_status(pid)
        processes.append(ProcessSample(pid, stat[0], stat[2], peak, rss, allowed))
    return TreeSample(processes)


def cpu_seconds_between(before: TreeSample, after: TreeSample) -> float:
    """CPU used between two samples, by the processes in either (new ones from zero)."""
    previous = {p.pid: p.cpu_ticks for p in before.processes}
    ticks = sum(p.cpu_ticks - previous.get(p.pid, 0) for p in after.processes)
    return max(ticks, 0) / _TICKS_PER_S


def core_busy_seconds() -> dict[int, float]:
    """Busy CPU time of each core since boot (user, nice, system, irq, softirq, steal)."""
    busy: dict[int, float] = {}
    for line in (_PROC / "stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(v) for v in values]
        # user nice system idle iowait irq softirq steal ...
        busy[int(name[3:])] = (sum(ticks[0:3]) + sum(ticks[5:8])) / _TICKS_PER_S
    return busy


def load_average() -> float:
    """The 1-minute load average (the machine may be shared: a noise indicator)."""
    return float((_PROC / "loadavg").read_text().split()[0])
