"""What a load run counts (``LoadTally``, one per process, mergeable) and reports (``LoadReport``).

Shares are over what was answered: ``filtered_share`` is the share of partner decisions with
``send = false``; ``bids_lost_share`` the share of logged bids (partners that did bid on the
replayed request) whose partner got ``send = false``: the revenue at stake.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from bidfilter.replay.histogram import LatencyHistogram
from bidfilter.thrift import Outcome

ERROR_KINDS: Final = ("timeout", "connection", "invalid_request", "application", "protocol")
"""How a call can fail: no reply in time; the connection failed (refused, reset, EOF); the
server refused the request (``InvalidRequest``); the server failed (``TApplicationException``);
a reply of the wrong shape."""

PERCENTILES: Final = (50.0, 90.0, 99.0, 99.9)


@dataclass
class LoadTally:
    """One process's counts; ``merge`` adds another's."""

    intended: int = 0  # open loop: calls the schedule asked for (rate × duration)
    sent: int = 0
    completed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    partner_calls: int = 0
    partner_calls_filtered: int = 0
    logged_bids: int = 0
    bids_lost: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    # open loop: how late each call left after its intended time (the generator's own delay)
    send_lag: LatencyHistogram = field(default_factory=LatencyHistogram)
    elapsed_s: float = 0.0  # from the start to the last answer (or the end of sending)
    cpu_s: float = 0.0
    connects: int = 0

    def snapshot(self) -> LoadTally:
        """A copy that later counting does not change."""
        copy = LoadTally()
        copy.merge(self)
        return copy

    def merge(self, other: LoadTally) -> None:
        self.intended += other.intended
        self.sent += other.sent
        self.completed += other.completed
        self.errors.update(other.errors)
        self.outcomes.update(other.outcomes)
        self.partner_calls += other.partner_calls
        self.partner_calls_filtered += other.partner_calls_filtered
        self.logged_bids += other.logged_bids
        self.bids_lost += other.bids_lost
        self.latency.merge(other.latency)
        self.send_lag.merge(other.send_lag)
        self.elapsed_s = max(self.elapsed_s, other.elapsed_s)
        self.cpu_s += other.cpu_s
        self.connects += other.connects


@dataclass(frozen=True)
class LoadReport:
    """The outcome of ``run_loadgen``; ``to_dict()`` for JSON, ``to_text()`` for people.

    ``unfinished`` counts calls still unanswered when the drain timeout cut the run short.
    ``cpu_s`` is the load generator's own CPU time (all processes, while sending and draining);
    ``cpu_share`` divides it by ``processes × elapsed``: near 1.0, the generator itself is the
    bottleneck and the figures say more about it than about the server.
    """

    target: str
    mode: str  # "open" (a fixed offered rate) or "closed" (as fast as answers come)
    offered_rate: float | None
    duration_s: float
    processes: int
    connections: int
    depth: int | None  # calls in flight per connection, closed loop only
    protocol: str
    transport: str
    candidates: str
    intended: int | None  # open loop only
    sent: int
    completed: int
    unfinished: int
    errors: dict[str, int]
    elapsed_s: float
    latency_us: dict[str, float]
    send_lag_us: dict[str, float] | None  # open loop only
    outcomes: dict[str, int]
    partner_calls: int
    partner_calls_filtered: int
    logged_bids: int
    bids_lost: int
    cpu_s: float
    connects: int

    @property
    def throughput(self) -> float:
        """Answered calls per second."""
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def filtered_share(self) -> float:
        return self.partner_calls_filtered / self.partner_calls if self.partner_calls else 0.0

    @property
    def bids_lost_share(self) -> float:
        return self.bids_lost / self.logged_bids if self.logged_bids else 0.0

    @property
    def cpu_us_per_call(self) -> float:
        return self.cpu_s * 1e6 / self.sent if self.sent else 0.0

    @property
    def cpu_share(self) -> float:
        budget = self.processes * self.elapsed_s
        return self.cpu_s / budget if budget > 0 else 0.0

    @classmethod
    def from_tally(cls, tally: LoadTally, **settings: Any) -> LoadReport:
        latency = tally.latency
        latency_us: dict[str, float] = {
            f"p{q:g}": float(latency.percentile(q)) for q in PERCENTILES
        }
        latency_us["max"] = float(latency.max)
        latency_us["mean"] = round(latency.mean, 1)
        open_loop = settings.get("mode") == "open"
        lag = tally.send_lag
        send_lag_us = (
            {"p50": float(lag.percentile(50)), "p99": float(lag.percentile(99)), "max": lag.max}
            if open_loop
            else None
        )
        errors = {kind: tally.errors.get(kind, 0) for kind in ERROR_KINDS}
        errors.update((kind, n) for kind, n in tally.errors.items() if kind not in errors)
        failed = sum(errors.values())
        return cls(
            intended=tally.intended if open_loop else None,
            sent=tally.sent,
            completed=tally.completed,
            unfinished=max(tally.sent - tally.completed - failed, 0),
            errors=errors,
            elapsed_s=tally.elapsed_s,
            latency_us=latency_us,
            send_lag_us=send_lag_us,
            outcomes={o.name: tally.outcomes.get(o.name, 0) for o in Outcome},
            partner_calls=tally.partner_calls,
            partner_calls_filtered=tally.partner_calls_filtered,
            logged_bids=tally.logged_bids,
            bids_lost=tally.bids_lost,
            cpu_s=tally.cpu_s,
            connects=tally.connects,
            **settings,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "mode": self.mode,
            "offered_rate": self.offered_rate,
            "duration_s": self.duration_s,
            "processes": self.processes,
            "connections": self.connections,
            "depth": self.depth,
            "protocol": self.protocol,
            "transport": self.transport,
            "candidates": self.candidates,
            "intended": self.intended,
            "sent": self.sent,
            "completed": self.completed,
            "unfinished": self.unfinished,
            "errors": dict(self.errors),
            "elapsed_s": round(self.elapsed_s, 3),
            "throughput": round(self.throughput, 1),
            "latency_us": dict(self.latency_us),
            "send_lag_us": None if self.send_lag_us is None else dict(self.send_lag_us),
            "outcomes": dict(self.outcomes),
            "partner_calls": self.partner_calls,
            "partner_calls_filtered": self.partner_calls_filtered,
            "filtered_share": round(self.filtered_share, 6),
            "logged_bids": self.logged_bids,
            "bids_lost": self.bids_lost,
            "bids_lost_share": round(self.bids_lost_share, 6),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_us_per_call": round(self.cpu_us_per_call, 2),
            "cpu_share": round(self.cpu_share, 3),
            "connects": self.connects,
        }

    def to_text(self) -> str:
        if self.mode == "open":
            load = f"open loop at {self.offered_rate:g} calls/s"
        else:
            load = f"closed loop, {self.depth} calls in flight per connection"
        lines = [
            f"load on {self.target}: {load} for {self.duration_s:g} s, {self.processes} "
            f"process(es), {self.connections} connection(s), {self.protocol}/{self.transport}",
            f"  calls      sent {self.sent}, answered {self.completed}, "
            f"unfinished {self.unfinished}, {self.throughput:,.0f} calls/s",
            "  errors     "
            + (", ".join(f"{k} {n}" for k, n in self.errors.items() if n) or "none"),
            "  latency    "
            + ", ".join(f"{k} {_ms(v)}" for k, v in self.latency_us.items())
            + (" (from the intended send time)" if self.mode == "open" else ""),
            *self._lag_lines(),
            "  outcomes   " + (", ".join(f"{k} {n}" for k, n in self.outcomes.items() if n) or "-"),
            f"  filtered   {self.filtered_share:.1%} of {self.partner_calls} partner calls; "
            f"bids lost {self.bids_lost_share:.2%} of {self.logged_bids} logged bids",
            f"  generator  {self.cpu_s:.2f} CPU s, {self.cpu_us_per_call:.1f} µs/call, "
            f"{self.cpu_share:.0%} busy"
            + ("  <- the generator may be the bottleneck" if self.cpu_share > 0.9 else ""),
        ]
        return "\n".join(lines)

    def _lag_lines(self) -> list[str]:
        if self.send_lag_us is None or self.intended is None:
            return []
        lag = self.send_lag_us
        line = (
            f"  send lag   p50 {_ms(lag['p50'])}, p99 {_ms(lag['p99'])}, max {_ms(lag['max'])}"
            " (how late the generator sent)"
        )
        missed = self.intended - self.sent
        # Over 1 % of the calls never sent, or a 10 ms p99 lag: no longer a measurement of the
        # server alone (a healthy generator lags well under a millisecond or two).
        if missed > 0.01 * self.intended or lag["p99"] > 10_000:
            line += (
                f"\n  WARNING    the generator fell behind its schedule ({self.sent} of "
                f"{self.intended} calls sent): the latencies include its own delay. It is "
                "too slow or starved of CPU: see its busy share below; more processes help "
                "if there are idle cores"
            )
        return [line]


def _ms(us: float) -> str:
    return f"{us / 1000:.2f} ms"
