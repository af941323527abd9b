"""What the run sends requests to: only sockets its own vassals serve (docs/security.md).

- :func:`follow_event` keeps the router's route table (routing/route_table.py) in step with the emperor's events:
  an app is routed from its "ready" event on, and only if the file at its routed path is a socket (not a symlink,
  never followed) that it binds; it is "down" (a 502 without a connect) while it starts, after a curse and while
  it stops, and gone once removed for good (its link gone). The emperor's reader calls it before any waiter sees
  the event, so a deploy that returned is routed.
- :func:`listener_check` is what the direct clients (``vassal.session``, ``vassal.request``, ``emperor-dev request
  --direct``) ask once connected, before sending a byte: the process listening on the socket (the kernel's
  ``SO_PEERCRED``: its pid and uid when it called ``listen()``) must be of the run's user and carry the run's
  environment marker. Another user's listener at the path, or a symlink to someone else's socket, gets nothing.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_emperor.engine.emperor_log import EmperorEvent, EventKind
from pytest_emperor.engine.processes import command_line, of_run
from pytest_emperor.engine.runs import socket_identity
from pytest_emperor.routing.route_table import RouteState, RouteTable

if TYPE_CHECKING:
    from pytest_emperor._protocol.client import ListenerCheck
    from pytest_emperor.engine.vassal import Vassal
    from pytest_emperor.routing.routes import RouteMap

__all__ = ["follow_event", "listener_check", "routed_socket_problem"]



def follow_event(
    event: EmperorEvent, *, run_dir: Path, vassal_dir: Path, route_map: RouteMap, vassals: Iterable[Vassal]
) -> None:
    """Update the route table of the run in ``run_dir`` for one emperor event about a vassal (one of
    ``vassals``, deployed into ``vassal_dir``)."""
    if event.vassal is None or not event.vassal.endswith(".ini"):
        return
    name = event.vassal[: -len(".ini")]
    state: RouteState | None
    if event.is_death or event.kind in (EventKind.SPAWNED, EventKind.STOPPING):
        state = RouteState.DOWN
    elif event.kind is EventKind.REMOVED:
        # After a curse the emperor removes the instance and spawns it again while its link is there.
        state = RouteState.DOWN if os.path.lexists(vassal_dir / event.vassal) else None
    elif event.kind is EventKind.READY:
        vassal = next((v for v in vassals if v.id == event.vassal), None)
        ok = vassal is not None and routed_socket_problem(route_map, vassal) is None
        state = RouteState.READY if ok else RouteState.DOWN
    else:
        return
    # A name the routing cannot carry (ValueError) is never routed. A table that cannot be written is a run that
    # closed meanwhile (its router is gone with it): the reader thread, which every waiter depends on, reads on.
    with contextlib.suppress(ValueError, OSError):
        RouteTable.of_run(run_dir, route_map).set(name, state)


def routed_socket_problem(route_map: RouteMap, vassal: Vassal) -> str | None:
    """Why the router must not send ``vassal``'s requests to the path its Host routes to, or None: the path is
    one the vassal binds and holds a socket, not a symlink (checked when it reports ready, right after its master
    bound it: in a sticky /tmp only that socket's owner can replace it)."""
    try:
        routed = route_map.socket_for(vassal.name)
    except ValueError as exc:
        return str(exc)
    if os.path.normpath(routed) not in {os.path.normpath(path) for path in vassal.socket_paths}:
        return f"vassal {vassal.name!r} does not bind {routed}, where its Host routes to"
    if socket_identity(routed) is None:
        what = f"a symlink to {os.readlink(routed)}" if os.path.islink(routed) else "not a socket"
        return f"{routed} is {what}"
    return None


def listener_check(marker: str, uids: Iterable[int]) -> ListenerCheck:
    """A check for the process listening on a connected socket: refused unless it runs as one of ``uids`` and
    is one of the run's processes, by the environment marker ``marker`` (the run dir): it carries it, or is
    exiting and its parent is the run's (processes.py ``of_run``)."""
    allowed = set(uids)

    def check(pid: int, uid: int) -> str | None:
        if uid not in allowed:
            return (
                f"the process listening on it (pid {pid}) belongs to {_user(uid)}, not to this run "
                f"({', '.join(_user(u) for u in sorted(allowed))}): another user's socket, refusing to send it "
                "the request"
            )
        if not of_run(pid, marker):
            what = command_line(pid).replace(b"\0", b" ").decode(errors="replace").strip()
            return (
                f"the process listening on it (pid {pid}, {what!r}) is not one of this run's: refusing to "
                "send it the request"
            )
        return None

    return check


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"
