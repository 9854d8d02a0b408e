"""One load-generator process: replays logged requests at its share of the load, and counts.

Open loop (a fixed offered rate): call ``i`` has an intended send time ``start + i / rate``, is
sent as soon as the clock passes it, whatever is still in flight (the async client pipelines),
and its latency is measured from that intended time, not from when it actually left. A slow
server, or a generator that falls behind, therefore shows in the latencies instead of quietly
lowering the offered load (no coordinated omission).

Closed loop (``rate=None``): ``connections × depth`` callers each send a call, wait for its
answer, and send the next; latency is measured from the actual send. This finds the maximum
throughput, not the latency at a given load.

Either way the run is bounded: sending stops at ``duration``, calls still in flight get
``drain_s`` more seconds, then the connections are closed and the rest count as unfinished.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bidfilter.client import (
    AsyncBidFilterClient,
    BidFilterTimeoutError,
    BidFilterUnavailableError,
    ClientClosedError,
    ConnectionSettings,
    Protocol,
    RemoteApplicationError,
    RemoteInvalidRequestError,
    Transport,
)
from bidfilter.replay.load_report import LoadTally
from bidfilter.replay.logged_auctions import LoggedAuction, read_logged_auctions
from bidfilter.thrift import ThriftProtocolError

CANDIDATE_MODES: Final = ("logged", "all")
"""``logged``: decide on the partners logged for each request; ``all``: on every partner the
model knows (no candidates sent)."""

# An open loop that falls behind sends its late calls in bursts of at most this many, then lets
# the event loop read replies, so being late never starves the reading side.
_MAX_BURST: Final = 256
# A closed-loop caller whose call failed to connect waits this long: no busy loop on a dead port.
_ERROR_PAUSE_S: Final = 0.01


@dataclass(frozen=True)
class LoadPlan:
    """One process's share of a load run (picklable: it crosses to spawned processes)."""

    host: str
    port: int
    logs: Path
    rate: float | None  # calls/s for this process; None: closed loop
    duration_s: float
    connections: int
    depth: int
    protocol: Protocol
    transport: Transport
    timeout_s: float
    retries: int
    drain_s: float
    candidates: str
    max_records: int
    first_record: int  # this process replays records first_record, +stride, +2 stride, ...
    stride: int
    # TLS as files, not an SSLContext: a context cannot be pickled (see ConnectionSettings).
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None


ProgressSink = Callable[[LoadTally], None]


def load_auctions(plan: LoadPlan) -> list[LoggedAuction]:
    """This process's records, in replay order (cycled through when the run needs more)."""
    auctions = read_logged_auctions(plan.logs, limit=plan.max_records)
    mine = auctions[plan.first_record % len(auctions) :: plan.stride]
    return mine or auctions


class LoadWorker:
    """Runs one ``LoadPlan`` on the running event loop; ``run()`` returns the tally."""

    def __init__(
        self,
        plan: LoadPlan,
        auctions: Sequence[LoggedAuction],
        progress: ProgressSink | None = None,
    ) -> None:
        if not auctions:
            raise ValueError("no auctions to replay")
        if plan.candidates not in CANDIDATE_MODES:
            raise ValueError(f"candidates must be one of {CANDIDATE_MODES}, not {plan.candidates}")
        self.plan = plan
        self.auctions = auctions
        self.tally = LoadTally()
        self._progress = progress
        settings = ConnectionSettings(
            plan.host,
            plan.port,
            protocol=plan.protocol,
            transport=plan.transport,
            timeout=plan.timeout_s,
            retries=plan.retries,
            tls_ca=plan.tls_ca,
            tls_cert=plan.tls_cert,
            tls_key=plan.tls_key,
        )
        self._client = AsyncBidFilterClient(settings, connections=plan.connections)
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._start = 0.0
        self._last_answer = 0.0
        self._next_record = 0

    async def connect(self) -> None:
        """Open the connections before the clock starts (raises if the server is unreachable)."""
        await self._client.connect()

    async def run(self) -> LoadTally:
        loop = asyncio.get_running_loop()
        plan = self.plan
        cpu_start = time.process_time()
        self._start = self._last_answer = sending_ended = loop.time()
        reporter = asyncio.ensure_future(self._report_progress()) if self._progress else None
        try:
            if plan.rate is None:
                await self._closed_loop()
            else:
                await self._open_loop(plan.rate)
            sending_ended = loop.time()
            if self._in_flight:
                await asyncio.wait(set(self._in_flight), timeout=plan.drain_s)
        finally:
            await self._client.close()
            for task in list(self._in_flight):
                task.cancel()
            if self._in_flight:
                await asyncio.wait(set(self._in_flight), timeout=1.0)
            if reporter is not None:
                reporter.cancel()
        tally = self.tally
        tally.elapsed_s = max(self._last_answer, sending_ended) - self._start
        tally.cpu_s = time.process_time() - cpu_start
        tally.connects = self._client.connects
        return tally

    # -- the two loops

    async def _open_loop(self, rate: float) -> None:
        loop = asyncio.get_running_loop()
        start, duration = self._start, self.plan.duration_s
        total = int(rate * duration)
        self.tally.intended = total
        interval = 1.0 / rate
        sent = 0
        while sent < total:
            now = loop.time()
            if now - start >= duration:
                break  # behind schedule: what was not sent in time is not sent at all
            due = min(total, int((now - start) * rate) + 1, sent + _MAX_BURST)
            while sent < due:
                self._launch(start + sent * interval)
                sent += 1
            wait = start + sent * interval - loop.time()
            # sleep(0) when late: read replies, then send the next burst.
            await asyncio.sleep(wait if wait > 0 else 0)

    def _launch(self, intended: float) -> None:
        task = asyncio.ensure_future(self._one(self._take_record(), intended))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _closed_loop(self) -> None:
        plan = self.plan
        callers = [
            asyncio.ensure_future(self._caller()) for _ in range(plan.connections * plan.depth)
        ]
        self._in_flight.update(callers)
        for caller in callers:
            caller.add_done_callback(self._in_flight.discard)
        # Callers stop sending at the deadline by themselves; waiting for them is the drain.
        await asyncio.sleep(plan.duration_s)

    async def _caller(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = self._start + self.plan.duration_s
        while loop.time() < deadline:
            if not await self._one(self._take_record(), loop.time()):
                await asyncio.sleep(_ERROR_PAUSE_S)

    def _take_record(self) -> LoggedAuction:
        auctions = self.auctions
        auction = auctions[self._next_record % len(auctions)]
        self._next_record += 1
        return auction

    # -- one call

    async def _one(self, auction: LoggedAuction, intended: float) -> bool:
        """Send one call and count its result; False when it failed to reach the server."""
        tally = self.tally
        tally.sent += 1
        if self.plan.rate is not None:
            tally.send_lag.record((asyncio.get_running_loop().time() - intended) * 1e6)
        candidates = auction.partners if self.plan.candidates == "logged" else None
        try:
            response = await self._client.filter(auction.openrtb, candidates)
        except RemoteInvalidRequestError:
            tally.errors["invalid_request"] += 1
            return True
        except RemoteApplicationError:
            tally.errors["application"] += 1
            return True
        except BidFilterTimeoutError:
            tally.errors["timeout"] += 1
            return False
        except BidFilterUnavailableError:
            tally.errors["connection"] += 1
            return False
        except ThriftProtocolError:
            tally.errors["protocol"] += 1
            return False
        except ClientClosedError:
            return False  # cut short by the drain timeout: counted as unfinished
        now = asyncio.get_running_loop().time()
        self._last_answer = now
        tally.latency.record((now - intended) * 1e6)
        tally.completed += 1
        tally.outcomes[response.outcome.name] += 1
        decisions = response.decisions
        tally.partner_calls += len(decisions)
        bidders = auction.bidders
        tally.logged_bids += len(bidders)
        for decision in decisions:
            if not decision.send:
                tally.partner_calls_filtered += 1
                if decision.partner in bidders:
                    tally.bids_lost += 1
        return True

    async def _report_progress(self) -> None:
        assert self._progress is not None
        while True:
            await asyncio.sleep(1.0)
            self._progress(self.tally)


def run_plan(
    plan: LoadPlan,
    progress: ProgressSink | None = None,
    ready: Callable[[], None] | None = None,
) -> LoadTally:
    """Load the records, connect, call ``ready`` (a start barrier), run: one process's share."""
    auctions = load_auctions(plan)

    async def main() -> LoadTally:
        worker = LoadWorker(plan, auctions, progress)
        await worker.connect()
        if ready is not None:
            # Blocking is fine: nothing else runs on this loop yet. Connections opened above
            # stay open while the other processes get ready.
            ready()
        return await worker.run()

    return asyncio.run(main())
