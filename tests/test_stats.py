"""The stats document parser (pure), on the emperor's real JSON shape."""

from __future__ import annotations

import json

import pytest

from pytest_emperor.engine.stats import parse_stats

# A real document from uWSGI 2.0.30's emperor (docs/uwsgi-behaviour.md, "The engine"), trimmed of unused fields.
DOCUMENT = {
    "version": "2.0.30", "pid": 10085, "uid": 0, "gid": 0, "cwd": "/r/vassals", "emperor": ["/r/vassals"],
    "emperor_tyrant": 0, "throttle_level": 0,
    "vassals": [{"id": "good.ini", "pid": 10088, "born": 1, "last_mod": 1700000000, "last_heartbeat": 0,
                 "loyal": 1, "ready": 1, "accepting": 1, "last_loyal": 1, "last_ready": 1, "last_accepting": 1,
                 "first_run": 1, "last_run": 1, "cursed": 0, "zerg": 0, "on_demand": "", "uid": 0, "gid": 0,
                 "monitor": "/r/vassals", "respawns": 2}],
    "blacklist": [{"id": "bad.ini", "throttle_level": 1001, "attempt": 3, "first_attempt": 1, "last_attempt": 2}],
}


def test_parses_vassals_and_blacklist() -> None:
    stats = parse_stats(json.dumps(DOCUMENT).encode())
    assert stats.pid == 10085
    good = stats.vassals["good.ini"]
    assert (good.pid, good.ready, good.accepting, good.loyal, good.cursed, good.respawns, good.last_mod) == (
        10088, True, True, True, 0, 2, 1700000000,
    )
    bad = stats.blacklist["bad.ini"]
    assert (bad.attempt, bad.throttle_ms) == (3, 1001)
    assert stats.raw["version"] == "2.0.30"


def test_on_demand_vassal_has_negative_pid() -> None:
    document = dict(DOCUMENT, vassals=[dict(DOCUMENT["vassals"][0], pid=-1)])  # type: ignore[index]
    assert parse_stats(json.dumps(document).encode()).vassals["good.ini"].pid == -1


@pytest.mark.parametrize("document", [b"[]", b'{"pid": 1}', b"not json"])
def test_rejects_what_is_not_an_emperor_document(document: bytes) -> None:
    with pytest.raises(ValueError):
        parse_stats(document)
