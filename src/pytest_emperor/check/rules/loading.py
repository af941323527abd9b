"""Rules on how the app is loaded: one main app (E309, W312), and the python plugin on a build that embeds Python
(I506, E507)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from pytest_emperor.check.rules.app import AppConfig, Kind, where
from pytest_emperor.check.rules.catalog import Severity
from pytest_emperor.check.rules.findings import Finding, finding

__all__ = ["mounts", "plugins"]

_MODULE_KEYS = ("module", "wsgi")
_FILE_KEYS = ("wsgi-file", "file")


def mounts(app: AppConfig) -> Iterable[Finding]:
    """E309 (`module` and `wsgi-file`: the python plugin loads `module` first, plugins/python/python_plugin.c
    init_apps) and W312 (the main app mounted again with `mount`)."""
    module = next((app.ini.option(k) for k in _MODULE_KEYS if app.ini.option(k)), None)
    file = next((app.ini.option(k) for k in _FILE_KEYS if app.ini.option(k)), None)
    if module is not None and file is not None and module.value and file.value:
        loaded = f"`{module.key} = {module.value}` (line {module.line})"
        message = f"`{file.key} = {file.value}` is skipped: {loaded} is loaded"
        f = finding("E309", where(app, file.file), file.line, message)
        dotted = module.value.partition(":")[0].strip().replace(".", "/") + ".py"
        chdir = (app.resolution.last("chdir") or "").rstrip("/")
        # with a `chdir` the module is found there (first on sys.path); without one, where uWSGI starts
        same = (
            file.value in (dotted, f"{chdir}/{dotted}")
            if chdir
            else file.value == dotted or file.value.endswith(f"/{dotted}")
        )
        if same:
            # the module is that very file: the app runs as meant, the wsgi-file line is only redundant
            f = replace(f, severity=Severity.INFO, message=f"{message} (the same file: the line is redundant)")
        yield f
    mains = {o.value.partition(":")[0].strip(): o for o in (module, file) if o is not None and o.value}
    if file is not None and file.value.endswith(".py"):
        # `mount = /x=name` imports `name`: the same code as a wsgi-file `name.py` in the app's directory
        folder, _, base = file.value.rpartition("/")
        chdir = (app.resolution.last("chdir") or "").rstrip("/")
        if not folder or folder.rstrip("/") == chdir:
            mains.setdefault(base[: -len(".py")], file)
    for option in app.ini.options:
        if option.key not in ("mount", "mount-app"):
            continue
        point, _, target = option.value.partition("=")
        mounted = target.partition(":")[0].strip()
        main = mains.get(mounted)
        if main is None and point.strip() in ("", "/") and mains:
            main = next(iter(mains.values()))  # a second app on the root, whatever its name
        if main is not None:
            message = f"`{option.key} = {option.value}` and `{main.key} = {main.value}` (line {main.line})"
            yield finding("W312", where(app, option.file), option.line, message)


def plugins(app: AppConfig) -> Iterable[Finding]:
    if not app.python_embedded:
        return
    for key, code in (("plugin", "I506"), ("plugins", "I506"), ("need-plugin", "E507"), ("need-plugins", "E507")):
        for option in app.ini.options:
            if option.key == key and any(p.strip().startswith("python") for p in option.value.split(",")):
                f = finding(code, where(app, option.file), option.line, f"`{key} = {option.value}`")
                if code == "E507" and app.kind is not Kind.CONVENTION:
                    # this binary is not production's: a distro build (plugins) needs the line
                    f = replace(
                        f, severity=Severity.INFO, message=f"{f.message} (this uwsgi binary; a distro one needs it)"
                    )
                yield f
