"""Assert the emperor's promise: while other vassals break, the healthy ones never notice.

``with Isolation(emperor, *healthy) as report:`` sends steady traffic to every healthy vassal for the whole
block (one client thread per vassal, requests back to back) and, on exit, fails unless for every healthy vassal:
no request failed (an exception or a 5xx), its master pid, worker pids and socket inode are unchanged, the emperor said
nothing about it (no reload, respawn, curse or stop: each of those resets its ``accepting``), and its p99 latency
stayed within the budget. The report keeps the numbers, and what the other vassals went through meanwhile.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.engine.emperor_log import EventKind
from pytest_emperor.errors import IsolationError

if TYPE_CHECKING:
    from pytest_emperor.engine.vassal import Vassal

# Emperor events that mean a vassal was disturbed. LOYAL is not one: the first request a vassal serves makes it
# loyal, and that may well be one of the block's own requests.
_DISTURBANCES = {
    EventKind.SPAWNED, EventKind.READY, EventKind.CURSED, EventKind.STOPPING, EventKind.REMOVED,
    EventKind.RELOADING, EventKind.THROTTLED, EventKind.NO_MERCY,
}


@dataclass(frozen=True)
class Attempt:
    """One request of the steady traffic."""

    at: float  # seconds since the block started
    latency: float
    status: int | None
    error: str | None

    @property
    def failed(self) -> bool:
        """An exception, or a 5xx: a healthy app answers every request of the traffic with less."""
        return self.error is not None or self.status is None or self.status >= 500


@dataclass
class VassalReport:
    """What one healthy vassal went through during the block."""

    name: str
    attempts: list[Attempt] = field(default_factory=list)
    pid_before: int | None = None
    pid_after: int | None = None
    inode_before: int | None = None
    inode_after: int | None = None
    workers_before: list[int] = field(default_factory=list)
    workers_after: list[int] = field(default_factory=list)
    emperor_lines: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """How many requests were sent."""
        return len(self.attempts)

    @property
    def failures(self) -> list[Attempt]:
        """The requests that failed."""
        return [a for a in self.attempts if a.failed]

    def percentile(self, q: float) -> float:
        """Latency percentile ``q`` (0-100) in seconds, nearest-rank."""
        latencies = sorted(a.latency for a in self.attempts)
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, max(0, round(q / 100 * len(latencies)) - 1))]

    @property
    def p50(self) -> float:
        """Median latency, seconds."""
        return statistics.median(a.latency for a in self.attempts) if self.attempts else 0.0

    @property
    def p99(self) -> float:
        """99th percentile latency, seconds."""
        return self.percentile(99)


@dataclass
class IsolationReport:
    """The numbers of one isolation block: per healthy vassal, and the events of every other vassal."""

    healthy: dict[str, VassalReport] = field(default_factory=dict)
    others: dict[str, list[str]] = field(default_factory=dict)
    duration: float = 0.0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line per healthy vassal, then what the others went through."""
        lines = [
            f"{r.name}: {r.requests} requests, {len(r.failures)} failed, p50 {r.p50 * 1000:.1f} ms, "
            f"p99 {r.p99 * 1000:.1f} ms"
            for r in self.healthy.values()
        ]
        for name, events in self.others.items():
            lines.append(f"{name} (not watched): {len(events)} emperor events")
        return "\n".join(lines)


def direct(vassal: Vassal) -> int:
    """One request straight to the vassal's socket."""
    return vassal.request("GET", "/", timeout=10).status_code


def through_router(vassal: Vassal) -> int:
    """One request through the emperor's router, as production traffic arrives."""
    return vassal.http.get("/", timeout=10).status_code


class Isolation:
    """A context manager; see the module docstring. ``send(vassal) -> status`` is how one request is made:
    ``direct`` (the default: straight to the vassal's socket) or ``through_router``."""

    def __init__(
        self,
        emperor: Emperor,
        healthy: Sequence[Vassal],
        *,
        p99_budget: float = 0.5,
        send: Callable[[Vassal], int] = direct,
    ) -> None:
        if not healthy:
            raise ValueError("isolation needs at least one healthy vassal to watch")
        self.emperor = emperor
        self.vassals = list(healthy)
        self.p99_budget = p99_budget
        self.send = send
        self.report = IsolationReport()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._since = 0
        self._started = 0.0

    def __enter__(self) -> IsolationReport:
        self._since = self.emperor.last_seq
        self._started = time.monotonic()
        for vassal in self.vassals:
            report = VassalReport(
                vassal.name, pid_before=vassal.pid, inode_before=_inode(vassal.socket_path),
                workers_before=sorted(vassal.workers),
            )
            self.report.healthy[vassal.name] = report
            self._attempt(vassal, report)  # each vassal must be healthy before anything breaks
            thread = threading.Thread(target=self._traffic, args=(vassal, report), daemon=True,
                                      name=f"isolation-{vassal.name}")
            thread.start()
            self._threads.append(thread)
        return self.report

    def _attempt(self, vassal: Vassal, report: VassalReport) -> None:
        start = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            status = self.send(vassal)
        except Exception as exc:  # every failure is a data point, not a crash of the traffic
            error = f"{type(exc).__name__}: {exc}"
        report.attempts.append(Attempt(start - self._started, time.monotonic() - start, status, error))

    def _traffic(self, vassal: Vassal, report: VassalReport) -> None:
        while not self._stop.is_set():
            self._attempt(vassal, report)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        __tracebackhide__ = True
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self.report.duration = time.monotonic() - self._started
        watched = {v.id for v in self.vassals}
        for vassal in self.vassals:
            report = self.report.healthy[vassal.name]
            self._attempt(vassal, report)  # and still healthy once everything is over
            report.pid_after, report.inode_after = vassal.pid, _inode(vassal.socket_path)
            report.workers_after = _workers_settled(vassal, report.workers_before)
            report.emperor_lines = [e.line for e in self.emperor.events(vassal.id, since=self._since)
                                    if e.kind in _DISTURBANCES]
            self.report.problems.extend(self._problems(vassal, report))
        for event in self.emperor.events(since=self._since):
            if event.vassal is not None and event.vassal not in watched and event.kind is not EventKind.OUTPUT:
                self.report.others.setdefault(event.vassal, []).append(event.line)
        if exc_type is None and self.report.problems:
            raise IsolationError(
                "isolation broken:\n" + "\n\n".join(self.report.problems) + "\n\n" + self.report.summary()
            )

    def _problems(self, vassal: Vassal, report: VassalReport) -> list[str]:
        problems = []
        failures = report.failures
        if failures:
            first = failures[0]
            what = first.error or f"status {first.status}"
            problems.append(
                f"{vassal.name}: {len(failures)} of {report.requests} requests failed; the first at "
                f"+{first.at:.3f}s: {what}\n  its log:\n    " + "\n    ".join(vassal.error_lines(15))
            )
        if report.pid_before != report.pid_after:
            problems.append(f"{vassal.name}: master pid changed from {report.pid_before} to {report.pid_after}")
        if report.pid_before == report.pid_after and report.workers_before != report.workers_after:
            problems.append(
                f"{vassal.name}: its workers were respawned ({report.workers_before} -> {report.workers_after})"
            )
        if report.inode_before != report.inode_after:
            problems.append(
                f"{vassal.name}: socket {vassal.socket_path} changed (inode {report.inode_before} -> "
                f"{report.inode_after}): it was removed or re-created"
            )
        if report.emperor_lines:
            problems.append(f"{vassal.name}: the emperor acted on it:\n  " + "\n  ".join(report.emperor_lines))
        if report.p99 > self.p99_budget:
            problems.append(
                f"{vassal.name}: p99 latency {report.p99 * 1000:.1f} ms over the budget of "
                f"{self.p99_budget * 1000:.0f} ms"
            )
        return problems


def _workers_settled(vassal: Vassal, before: list[int], timeout: float = 5.0) -> list[int]:
    """The vassal's workers, once as many as ``before`` run again: a killed worker is gone at once, but its
    master forks the replacement only after reaping it, a moment later (much later on a busy machine). Reading
    the list at once reported ``[a, b] -> [b]``, missing the new worker. No event says it: polled (the workers
    are the master's children), bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    workers = sorted(vassal.workers)
    while workers != before and len(workers) < len(before) and time.monotonic() < deadline:
        time.sleep(0.005)
        workers = sorted(vassal.workers)
    return workers


def _inode(path: str | None) -> int | None:
    if path is None:
        return None
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def isolation(emperor: Emperor, *healthy: Vassal, p99_budget: float = 0.5, via: str = "direct") -> Isolation:
    """``with isolation(emperor, *healthy) as report:``: steady traffic to ``healthy`` for the whole block,
    which fails on exit unless none of them noticed what the block did (see the module doc). ``via`` is
    ``"direct"`` (to the sockets) or ``"router"``."""
    senders = {"direct": direct, "router": through_router}
    if via not in senders:
        raise ValueError(f"via must be 'direct' or 'router', not {via!r}")
    return Isolation(emperor, healthy, p99_budget=p99_budget, send=senders[via])


class EmperorUnderTest(Emperor):
    """The emperor the pytest plugin runs: an :class:`Emperor` that also offers the isolation assertion, so
    that the engine itself never depends on this testing feature."""

    def isolation(self, *healthy: Vassal, p99_budget: float = 0.5, via: str = "direct") -> Isolation:
        """``with emperor.isolation(*healthy) as report:``; see :func:`isolation`."""
        return isolation(self, *healthy, p99_budget=p99_budget, via=via)
