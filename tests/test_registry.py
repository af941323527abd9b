"""The registry of an emperor's vassals: what the log reader walks while deploys and removals go on."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pytest_emperor.engine.registry import Registry


def vassal(name: str) -> Any:
    return SimpleNamespace(name=name, socket_paths=[f"/tmp/{name}.api.sock"])


def test_walking_the_vassals_survives_a_removal_meanwhile() -> None:
    registry = Registry()
    first, second = vassal("a"), vassal("b")
    registry.add(first)
    registry.add(second)
    walk = iter(registry.values())
    assert next(walk) is first
    registry.forget(second)  # another thread removes it mid-walk
    assert list(walk) == [second]  # a snapshot: no KeyError in the reader thread
    assert list(registry) == ["a"] and "b" not in registry


def test_forget_leaves_a_vassal_deployed_again_under_the_name() -> None:
    registry = Registry()
    old, new = vassal("a"), vassal("a")
    registry.add(old)
    registry.add(new)
    registry.forget(old)
    assert registry["a"] is new
