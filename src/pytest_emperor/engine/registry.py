"""The vassals of one emperor by name, and the removals still finishing in the background."""

from __future__ import annotations

import threading
from collections.abc import Callable, ItemsView, Iterable, Iterator, Mapping, ValuesView
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_emperor.engine.vassal import Vassal


@dataclass
class _Removal:
    """A vassal being removed in the background (``Vassal.remove(wait=False)``)."""

    vassal: Vassal
    thread: threading.Thread = field(init=False)
    error: BaseException | None = None


class Registry(Mapping[str, "Vassal"]):
    """The deployed vassals (a read-only mapping name -> Vassal) and their background removals."""

    def __init__(self) -> None:
        self._vassals: dict[str, Vassal] = {}
        self._removals: dict[str, _Removal] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Vassal:
        return self._vassals[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._vassals))  # a copy: deploys add to it from other threads

    def __len__(self) -> int:
        return len(self._vassals)

    # Snapshots: the reader thread walks the vassals while deploys and removals change them in others.
    def values(self) -> ValuesView[Vassal]:
        return dict(self._vassals).values()

    def items(self) -> ItemsView[str, Vassal]:
        return dict(self._vassals).items()

    def add(self, vassal: Vassal) -> None:
        """Register a vassal being deployed."""
        self._vassals[vassal.name] = vassal

    def forget(self, vassal: Vassal) -> None:
        """Drop a removed ``vassal`` (unless its name was deployed again since)."""
        if self._vassals.get(vassal.name) is vassal:
            del self._vassals[vassal.name]

    def remove_in_background(self, vassal: Vassal, timeout: float | None, then: Callable[[], None]) -> None:
        """Forget ``vassal`` now and stop it in a thread, then call ``then``; :meth:`finish_removals` waits for
        both."""
        removal = _Removal(vassal)

        def run() -> None:
            try:
                vassal.stop(timeout)
            except BaseException as exc:  # raised to whoever waits for the removal
                removal.error = exc
            finally:
                then()

        removal.thread = threading.Thread(target=run, name=f"remove-{vassal.name}", daemon=True)
        with self._lock:
            self._vassals.pop(vassal.name, None)
            self._removals[vassal.name] = removal
        removal.thread.start()

    def finish_removals(self, name: str | None = None, sockets: Iterable[str] = ()) -> None:
        """Wait for the background removals of the vassal ``name`` and of those binding one of ``sockets`` (all of
        them if neither is given); raise the first error one of them met."""
        wanted = set(sockets)
        with self._lock:
            chosen = [
                (key, removal)
                for key, removal in self._removals.items()
                if (name is None and not wanted) or key == name or wanted & set(removal.vassal.socket_paths)
            ]
        errors = []
        for key, removal in chosen:
            removal.thread.join()
            with self._lock:
                if self._removals.get(key) is removal:
                    del self._removals[key]
            if removal.error is not None:
                errors.append(removal.error)
        if errors:
            raise errors[0]
