"""The emperor's stats socket (``--emperor-stats``): one JSON document per connection, then close.

The schema is uWSGI 2.0's ``emperor_send_stats`` (docs/uwsgi-behaviour.md, "The engine"). Only the fields this project
reads are modelled; the raw document stays available as ``EmperorStats.raw``.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any


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


def read_stats(path: str, timeout: float = 5.0) -> EmperorStats:
    """Connect to the stats socket at ``path`` and read one document.

    A connection is also the emperor's doorbell: it wakes its event loop, after which it runs its directory
    scanner, so a vassal file created just before is picked up now rather than at the next ``--emperor-freq``.
    """
    chunks = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return parse_stats(b"".join(chunks))
