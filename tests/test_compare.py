"""Two copies of an app compared (testing/compare.py): the differences of two answers, JSON as data, and the
README's example failing, naming the difference, when the working tree answers otherwise than its last commit."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from plugin_helpers import Sandbox, assert_nothing_left
from test_readme import RUN_TIMEOUT, blocks, readme_repo

from pytest_emperor.testing.compare import ABSENT, HEADERS, _differences


def answer(body: bytes, status: int = 200, **headers: str) -> requests.Response:
    """A response as requests hands it over (the comparison reads status, headers and content)."""
    response = requests.Response()
    response.status_code = status
    response.headers.update({"Content-Type": "text/plain", "Date": "Mon, 07 Dec 2026 05:00:00 GMT", **headers})
    response._content = body
    response.encoding = "utf-8"
    return response


def differences(old: requests.Response, new: requests.Response) -> list[tuple[str, Any, Any]]:
    return list(_differences(old, new, HEADERS))


def test_the_same_answer_has_no_difference_whatever_its_date_and_server() -> None:
    old = answer(b"hello\n", Server="uWSGI")
    new = answer(b"hello\n", Date="Tue, 08 Dec 2026 06:00:00 GMT")
    assert differences(old, new) == []


def test_status_headers_and_a_text_body_differ() -> None:
    old = answer(b"hello\n", 200, **{"Cache-Control": "no-store"})
    new = answer(b"bye\n", 201, **{"Content-Type": "text/html"})
    assert differences(old, new) == [
        ("status", 200, 201),
        ("header Content-Type", "text/plain", "text/html"),
        ("header Cache-Control", "no-store", ABSENT),
        ("body", "hello\n", "bye\n"),
    ]


def test_a_long_text_body_shows_its_first_differing_line() -> None:
    old, new = answer(b"a\nb\nc\nd\n"), answer(b"a\nb\nX\nd\ne\n")
    assert differences(old, new) == [("body line 3", "c\n", "X\n")]
    assert differences(answer(b"a\nb\n"), answer(b"a\nb\nc\n")) == [("body line 3", ABSENT, "c\n")]


def test_json_is_compared_as_data() -> None:
    kind = {"Content-Type": "application/json"}
    old = answer(json.dumps({"a": 1, "items": [{"price": 3}], "ok": True, "x y": 1}).encode(), **kind)
    new = answer(b'{"items":[{"price":4},{"price":5}],"a":1,"ok":1,"x y":1,"new":null}', **kind)
    assert differences(old, new) == [
        ("body $.items[0].price", 3, 4),
        ("body $.items[1]", ABSENT, {"price": 5}),
        ("body $.new", ABSENT, None),
        ("body $.ok", True, 1),  # equal in Python, not in JSON
    ]
    assert differences(old, answer(b'{"ok": true, "x y": 1, "items": [{"price": 3}], "a": 1}', **kind)) == []
    problem = {"Content-Type": "application/problem+json"}
    assert differences(answer(b'{"a": 1}', **problem), answer(b'{"b": 1}', **problem)) == [
        ("body $.a", 1, ABSENT),
        ("body $.b", ABSENT, 1),
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_a_document_and_its_reordered_respelling_do_not_differ(document: Any) -> None:
    kind = {"Content-Type": "application/json"}
    spelled = json.dumps(document, indent=2, sort_keys=True).encode()
    assert differences(answer(json.dumps(document).encode(), **kind), answer(spelled, **kind)) == []


@given(st.dictionaries(st.text(alphabet="abc", min_size=1, max_size=3), json_values, min_size=1), st.data())
def test_a_changed_value_is_one_difference_at_its_path(document: dict[str, Any], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(document)))
    changed = {**document, key: "changed!"}  # longer than any text the documents hold
    kind = {"Content-Type": "application/json"}
    found = differences(answer(json.dumps(document).encode(), **kind), answer(json.dumps(changed).encode(), **kind))
    assert found == [(f"body $.{key}", document[key], changed[key])]


@pytest.mark.usefixtures("uwsgi_bin", "example_venvs")
def test_the_readme_comparison_fails_naming_the_difference(
    pytester: pytest.Pytester, box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = next(block for block in blocks("python") if "assert_same_answers(" in block)
    repo = readme_repo(pytester.path, [example], monkeypatch)
    app = repo / "app.py"
    app.write_text(app.read_text().replace('"hello from service1\\n"', '"hello from this branch\\n"'))
    result = pytester.runpytest_subprocess("--emperor", "-p", "no:cacheprovider", timeout=RUN_TIMEOUT)
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert re.search(r"AnswersDiffer: service1-head\S* \(old\) and service1\S* \(new\) answer 1 of 3 requests", output)
    reported = [
        line.split(maxsplit=1)[1]
        for line in output.splitlines()
        if line.startswith("E ") and " != " in line and "AnswersDiffer" not in line
    ]
    assert reported == ["GET /: body: 'hello from service1\\n' != 'hello from this branch\\n'"]  # only what differs
    assert_nothing_left(box)
