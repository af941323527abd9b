"""The emperor's stats socket (``--emperor-stats``): one JSON document per connection, then close; and the client
that reads it (:class:`StatsClient`), which also rings the emperor's doorbell.

The schema is uWSGI 2.0's ``emperor_send_stats`` (docs/uwsgi-behaviour.md, "The engine"). Only the fields this project
reads are modelled; the raw document stays available as ``EmperorStats.raw``.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_emperor.errors import UnsafePath

if TYPE_CHECKING:
    from pytest_emperor.engine.events import EventLog


@dataclass(frozen=True)
class VassalStats:
    """One entry of ``vassals``: a vassal the emperor is running (or reaping)."""

    id: str
    pid: int
    ready: bool
    accepting: bool
    loyal: bool
    cursed: int  # epoch seconds of the curse, 0 if not cursed
    respawns: int
    last_mod: int


@dataclass(frozen=True)
class BlacklistEntry:
    """One entry of ``blacklist``: a vassal that died without ever being loyal, waiting for its throttle."""

    id: str
    attempt: int
    throttle_ms: int  # the emperor already reports milliseconds here


@dataclass(frozen=True)
class EmperorStats:
    """A parsed stats document."""

    pid: int
    vassals: dict[str, VassalStats]
    blacklist: dict[str, BlacklistEntry]
    raw: dict[str, Any] = field(repr=False)


def parse_stats(document: bytes) -> EmperorStats:
    """Parse one stats document (pure; raises ValueError on anything that is not the emperor's JSON)."""
    raw = json.loads(document)
    if not isinstance(raw, dict) or "vassals" not in raw:
        raise ValueError(f"not an emperor stats document: {document[:200]!r}")
    vassals = {
        v["id"]: VassalStats(
            id=v["id"],
            pid=int(v["pid"]),
            ready=bool(v["ready"]),
            accepting=bool(v["accepting"]),
            loyal=bool(v["loyal"]),
            cursed=int(v["cursed"]),
            respawns=int(v.get("respawns", 0)),
            last_mod=int(v.get("last_mod", 0)),
        )
        for v in raw["vassals"]
    }
    blacklist = {
        b["id"]: BlacklistEntry(id=b["id"], attempt=int(b["attempt"]), throttle_ms=int(b["throttle_level"]))
        for b in raw.get("blacklist", [])
    }
    return EmperorStats(pid=int(raw["pid"]), vassals=vassals, blacklist=blacklist, raw=raw)


def connect(path: str, emperor_pid: int | None = None, timeout: float | None = None) -> socket.socket:
    """A connection to the stats socket at ``path``; with ``emperor_pid``, UnsafePath unless the process that
    listens on it is that emperor. Under a privilege drop the socket lives in a dir its user owns, who could swap
    it for one of their own: the kernel's ``SO_PEERCRED`` (the listener's pid as of its ``listen()``) cannot be
    forged by the listener."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(path)
        if emperor_pid is not None:
            creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, uid, _ = struct.unpack("3i", creds)
            if pid != emperor_pid:
                raise UnsafePath(
                    f"the stats socket {path} is served by pid {pid} (uid {uid}), not by the emperor (pid "
                    f"{emperor_pid}): not read (another process replaced it)"
                )
    except BaseException:
        s.close()
        raise
    return s


def read_stats(path: str, timeout: float = 5.0, emperor_pid: int | None = None) -> EmperorStats:
    """Connect to the stats socket at ``path`` (served by ``emperor_pid``, when given: see ``connect``) and read
    one document.

    A connection is also the emperor's doorbell: it wakes its event loop, after which it runs its directory
    scanner, so a vassal file created just before is picked up now rather than at the next ``--emperor-freq``.
    """
    chunks = []
    with connect(path, emperor_pid, timeout) as s:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return parse_stats(b"".join(chunks))


class StatsClient:
    """Reads one emperor's stats, shares recent snapshots between callers, and rings its doorbell."""

    def __init__(self, path: str, events: EventLog, emperor_pid: int | None = None) -> None:
        self.path = path
        self.emperor_pid = emperor_pid  # the only process whose socket is read (``connect``)
        self._events = events
        self._lock = threading.Lock()
        self._recent: tuple[int, EmperorStats] | None = None  # (last_seq when read, the snapshot)
        self._bells: list[socket.socket] = []  # doorbell connections the emperor has not answered yet (see ring)
        self._bells_lock = threading.Lock()

    def read(self) -> EmperorStats:
        """Read the emperor's stats (and wake it up: see ``read_stats``)."""
        seen = self._events.last_seq
        stats = read_stats(self.path, emperor_pid=self.emperor_pid)
        self._recent = (seen, stats)
        return stats

    def after(self, seq: int) -> EmperorStats:
        """A snapshot read after the event ``seq`` was seen: the latest one read if it is that recent, else a new
        one. Each read costs the emperor a JSON dump of every vassal, so vassals that become ready together (50 at
        once under ``emperor-dev up``) share one."""
        with self._lock:  # the others wait for this read rather than start their own
            recent = self._recent
            if recent is not None and recent[0] >= seq:
                return recent[1]
            return self.read()

    def ring(self) -> None:
        """Wake the emperor so that it scans its vassal dir now, without waiting for it.

        A connection to the stats socket wakes it (see ``read_stats``) and, unlike a signal, is never lost: it
        waits in the listen queue until the emperor gets to it. Reading the answer would wait for the emperor,
        which is slow while dozens of vassals start; so the connection is left open for the emperor to write its
        answer into the socket buffer, and closed once answered: closed earlier, the emperor's write would fail
        and log an error.
        """
        bell = connect(self.path, self.emperor_pid)
        with self._bells_lock:
            self._bells.append(bell)
            self._close_bells(answered_only=True)

    def close(self) -> None:
        """Close every doorbell connection, answered or not (the emperor is gone)."""
        with self._bells_lock:
            self._close_bells(answered_only=False)

    def _close_bells(self, answered_only: bool) -> None:
        answered: set[int] = set()
        if answered_only and self._bells:
            poller = select.poll()  # not select(): a busy process may hold fds past FD_SETSIZE
            for bell in self._bells:
                poller.register(bell, select.POLLIN)
            answered = {fd for fd, _ in poller.poll(0)}
        keep = []
        for bell in self._bells:
            if answered_only and bell.fileno() not in answered:
                keep.append(bell)
            else:
                bell.close()
        self._bells = keep
