"""Rules on how the file reads: what the reader found uWSGI reads differently from how it looks (E001-E004, W005,
E102, W103, E105 expansion loops)."""

from __future__ import annotations

from collections.abc import Iterable

from pytest_emperor.check.rules.app import AppConfig, Kind, where
from pytest_emperor.check.rules.findings import Finding, finding
from pytest_emperor.ini.values import BLANKS, lines

__all__ = ["syntax"]


def syntax(app: AppConfig) -> Iterable[Finding]:
    split: dict[str, list[str]] = {}  # each file's lines, split once (a file may have thousands of problems)

    def lines_of(file: str) -> list[str]:
        if file not in split:
            split[file] = lines(app.ini.texts.get(file, app.raw_text))
        return split[file]

    for problem in app.ini.problems:
        if problem.code == "no-section":
            yield finding("E001", where(app, problem.file), problem.line, problem.message)
        elif problem.code == "empty-key":
            yield finding("E002", where(app, problem.file), problem.line, problem.message)
        elif problem.code == "magic-newline":
            raw = lines_of(problem.file)
            swallowed = raw[problem.line].strip() if problem.line < len(raw) else ""
            message = f"line {problem.line + 1} `{swallowed}` is lost"
            yield finding("E102", where(app, problem.file), problem.line, message)
        elif problem.code == "magic-unknown":
            raw = lines_of(problem.file)
            text = raw[problem.line - 1].lstrip(BLANKS) if 0 < problem.line <= len(raw) else ""
            if not text.startswith((";", "#")):  # a comment's text is never used
                yield finding("W103", where(app, problem.file), problem.line, problem.message)
        elif problem.code == "missing-file" and app.kind is not Kind.CONVENTION:
            # a file a config run elsewhere includes: it may well be on the production host (relative to the
            # directory uWSGI starts in there)
            option = next((o for o in app.ini.options if o.line == problem.line and o.file == problem.file), None)
            named = f"`{option.key} = {option.value}`" if option else "an included file"
            yield finding("I315", where(app, problem.file), problem.line, f"{named}: not read here")
        elif problem.code in ("fatal", "missing-file"):
            yield finding("E003", where(app, problem.file), problem.line, problem.message)
        elif problem.code == "open-logic":
            yield finding("E004", where(app, problem.file), problem.line, problem.message)
        elif problem.code == "not-followed":
            yield finding("W005", where(app, problem.file), problem.line, problem.message)
    for problem in app.resolution.problems:
        yield finding("E105", where(app, problem.file), problem.line, problem.message)
