"""Two copies of an app asked the same questions: ``assert_same_answers(old, new, requests)`` sends each request
to both vassals (say, production's revision and this branch) and fails with the first differences in status,
the headers a client acts on, and the body, JSON compared as data (docs/revisions.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from pytest_emperor.errors import AnswersDiffer

if TYPE_CHECKING:
    import requests

    from pytest_emperor.engine.vassal import Vassal

__all__ = ["HEADERS", "Difference", "RequestSpec", "assert_same_answers", "compare_answers"]

#: A request: ``"/path"`` (a GET), ``("POST", "/path")``, or ``("POST", "/path", {"json": {...}})`` with
#: requests' keywords (``json=``, ``data=``, ``params=``, ``headers=``).
RequestSpec = Union[str, tuple[str, str], tuple[str, str, Mapping[str, Any]]]

#: The headers compared unless others are named: what a client acts on. Date, Server, Content-Length (the body
#: is compared itself) and request ids differ between any two answers.
HEADERS = (
    "Content-Type",
    "Location",
    "Cache-Control",
    "Content-Encoding",
    "Content-Language",
    "Content-Disposition",
    "Allow",
    "Vary",
    "WWW-Authenticate",
    "Access-Control-Allow-Origin",
)

_SHOWN = 200  # characters of a value in a difference's line
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class Difference:
    """One way two answers to ``request`` (``"GET /x"``) differ: ``where`` is ``status``, ``header <Name>``,
    ``body``, ``body line <n>`` or ``body <JSON path>`` (``body $.items[0].price``); ``old`` and ``new`` are the
    two values there (``ABSENT`` where one has none)."""

    request: str
    where: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.request}: {self.where}: {_shown(self.old)} != {_shown(self.new)}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def compare_answers(
    old: Vassal, new: Vassal, requests: Iterable[RequestSpec], *, headers: Collection[str] = HEADERS,
    host: str | None = None,
) -> list[Difference]:
    """Send each request to ``old``, then to ``new``, straight to their sockets and with one Host for both
    (``host``, default ``old``'s: a page that names its own URL must not differ by the copy's name), and return
    every difference between their answers, in request order."""
    asked_as = host if host is not None else old.host
    found: list[Difference] = []
    for spec in requests:
        method, path, options = _parts(spec)
        url = f"http://{asked_as}{path}"
        before, after = (vassal.session.request(method, url, **options) for vassal in (old, new))
        found += (Difference(f"{method} {path}", where, a, b) for where, a, b in _differences(before, after, headers))
    return found


def assert_same_answers(
    old: Vassal, new: Vassal, requests: Iterable[RequestSpec], *, headers: Collection[str] = HEADERS,
    host: str | None = None, show: int = 10,
) -> None:
    """Fail (``AnswersDiffer``, an AssertionError) unless ``old`` and ``new`` answer every request alike; the
    message names both vassals and the first ``show`` differences (``compare_answers`` for the arguments)."""
    __tracebackhide__ = True
    asked = list(requests)
    found = compare_answers(old, new, asked, headers=headers, host=host)
    if found:
        requests_differing = len({d.request for d in found})
        more = f"\n  ... and {len(found) - show} more" if len(found) > show else ""
        raise AnswersDiffer(
            f"{old.name} (old) and {new.name} (new) answer {requests_differing} of {len(asked)} requests "
            f"differently (old != new):\n" + "\n".join(f"  {d}" for d in found[:show]) + more,
            found,
        )


def _parts(spec: RequestSpec) -> tuple[str, str, Mapping[str, Any]]:
    if isinstance(spec, str):
        return "GET", spec, {}
    if len(spec) == 2:
        return spec[0].upper(), spec[1], {}
    return spec[0].upper(), spec[1], spec[2]


def _differences(
    old: requests.Response, new: requests.Response, headers: Collection[str]
) -> Iterator[tuple[str, Any, Any]]:
    if old.status_code != new.status_code:
        yield "status", old.status_code, new.status_code
    for name in headers:
        a, b = old.headers.get(name, ABSENT), new.headers.get(name, ABSENT)
        if a != b:
            yield f"header {name}", a, b
    if old.content == new.content:
        return
    data = [_json(answer) for answer in (old, new)]
    if data[0] is not ABSENT and data[1] is not ABSENT:
        yield from ((f"body {path}", a, b) for path, a, b in _json_differences(data[0], data[1], "$"))
        return
    old_lines, new_lines = old.text.splitlines(keepends=True), new.text.splitlines(keepends=True)
    if len(old_lines) <= 1 and len(new_lines) <= 1:
        yield "body", old.text, new.text
        return
    for number in range(max(len(old_lines), len(new_lines))):
        a = old_lines[number] if number < len(old_lines) else ABSENT
        b = new_lines[number] if number < len(new_lines) else ABSENT
        if a != b:  # the first differing line: the rest of a text body seldom says more
            yield f"body line {number + 1}", a, b
            return


def _json(answer: requests.Response) -> Any:
    """The answer's JSON document, ABSENT unless it says it is JSON (``application/json``, ``+json``) and is."""
    if "json" not in answer.headers.get("Content-Type", ""):
        return ABSENT
    try:
        return json.loads(answer.content)
    except ValueError:
        return ABSENT


def _json_differences(old: Any, new: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """The paths (``$.a[0]``) where two JSON documents differ as data: key order and spacing do not count, a
    missing key does, and so does ``true`` against ``1`` (equal in Python, not in JSON)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            where = f"{path}.{key}" if _IDENTIFIER.fullmatch(key) else f"{path}[{json.dumps(key)}]"
            yield from _json_differences(old.get(key, ABSENT), new.get(key, ABSENT), where)
    elif isinstance(old, list) and isinstance(new, list):
        for index in range(max(len(old), len(new))):
            a = old[index] if index < len(old) else ABSENT
            b = new[index] if index < len(new) else ABSENT
            yield from _json_differences(a, b, f"{path}[{index}]")
    elif old != new or isinstance(old, bool) != isinstance(new, bool):
        yield path, old, new
