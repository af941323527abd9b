"""Coverage of the code the vassals run: ``pytest --emperor --cov=SRC`` and ``emperor-dev up --cov``.

The app's code runs in uWSGI masters and workers, in the app's own virtualenv, not in the process that measures.
A run with coverage gets a private directory holding:

* ``path/``: only coverage.py (a symlink to the package this process imports) and the bootstrap module, put on
  every vassal's ``pythonpath`` so that an app venv without coverage.py is measured all the same;
* ``settings.json``: what to measure (source, include, omit, branch, config file), made absolute here because a
  vassal runs in its own ``chdir``;
* ``data/``: one ``.coverage.<suffix>`` file per vassal process, written when that process exits.

The emperor gives every vassal ``pythonpath``, ``shared-import`` (the bootstrap), ``env`` and ``skip-atexit = false``
through its ``--vassals-include`` (emperor.py), so the user's ``app.uwsgi.ini`` is never touched, and stops vassals
gracefully. Once the emperor has stopped,
the files that are complete coverage data go where the report is made: next to pytest-cov's data file (its
``combine()`` picks up ``<data_file>.*``), or combined into ``.coverage`` for ``emperor-dev up --cov``. A file cut
short (a vassal killed while saving) is left out with a warning: only that process's data is lost.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_emperor.engine.runs import runs_root

if TYPE_CHECKING:
    import pytest
    from coverage.config import CoverageConfig

BOOTSTRAP_MODULE = "_pytest_emperor_cov"
SETTINGS_ENV = "PYTEST_EMPEROR_COV"  # the bootstrap's own copy: cov_bootstrap.SETTINGS_ENV (it cannot import us)
DATA_NAME = ".coverage"


def _absolute_pattern(pattern: str, base: Path) -> str:
    # coverage.py makes a relative include/omit pattern absolute against its cwd unless it starts with a wildcard
    # (coverage.files.prep_patterns); the vassal's cwd is its chdir, so do it here against the measuring process's.
    return pattern if pattern.startswith("*") else str(base / pattern)


@dataclass(frozen=True)
class CoverageSettings:
    """What a vassal measures: coverage.py's run options, every path made absolute."""

    source: list[str] | None
    source_pkgs: list[str]
    include: list[str] | None
    omit: list[str]
    branch: bool
    config_file: str | None  # the config file the measuring process read (.coveragerc, pyproject.toml...)

    @classmethod
    def from_config(cls, config: CoverageConfig, base: Path) -> CoverageSettings:
        """The settings of a configured ``coverage.Coverage``; relative paths are taken from ``base``.

        A ``source`` entry that is a directory under ``base`` becomes absolute, and any other is a package name,
        as coverage.py itself decides; except one naming a top-level module file there (``--cov=app`` beside
        ``app.py``): the ``wsgi-file = app.py`` loader imports it under a name of its own (``uwsgi_file_...``)
        that the module name never matches (seen: nothing measured), so the file itself is included instead (its
        directory, when other sources are named too: ``include`` only applies without ``source``)."""
        source = None
        include = [_absolute_pattern(p, base) for p in config.run_include] or None
        if config.source is not None:
            modules = [base / f"{s}.py" for s in config.source if _is_module_file(s, base)]
            rest = [s for s in config.source if not _is_module_file(s, base)]
            others = [str(base / s) if (base / s).is_dir() else s for s in rest]
            if others:
                source = list(dict.fromkeys([*others, *(str(m.parent) for m in modules)]))
            else:
                include = [*(include or []), *(str(m) for m in modules)]
        return cls(
            source=source,
            source_pkgs=list(config.source_pkgs),
            include=include,
            omit=[_absolute_pattern(p, base) for p in config.run_omit],
            branch=bool(config.branch),
            config_file=str(base / config.config_file) if config.config_file else None,
        )


def _is_module_file(entry: str, base: Path) -> bool:
    return not (base / entry).is_dir() and (base / f"{entry}.py").is_file()


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


class VassalCoverage:
    """The coverage dir of one emperor run: give :meth:`vassal_options` and :meth:`emperor_flags` to the emperor;
    once it has stopped, :meth:`export_to` (pytest-cov) or :meth:`combine_into` (emperor-dev); then :meth:`close`."""

    def __init__(self, settings: CoverageSettings) -> None:
        coverage_dir = _package_dir("coverage")
        if coverage_dir is None:
            raise ModuleNotFoundError(
                f"measuring coverage inside vassals needs coverage.py in {sys.prefix}: pip install coverage"
            )
        self.settings = settings
        self.dir = Path(tempfile.mkdtemp(prefix="pytest-emperor-cov-"))
        try:
            self.path_dir.mkdir()
            self.data_dir.mkdir()
            (self.path_dir / "coverage").symlink_to(coverage_dir, target_is_directory=True)
            # coverage.py reads a pyproject.toml config with tomli before Python 3.11 (tomllib after).
            tomli_dir = _package_dir("tomli") if sys.version_info < (3, 11) else None
            if tomli_dir is not None:
                (self.path_dir / "tomli").symlink_to(tomli_dir, target_is_directory=True)
            shutil.copyfile(Path(__file__).with_name("cov_bootstrap.py"), self.path_dir / f"{BOOTSTRAP_MODULE}.py")
            # Never the bootstrap itself (measured with no source), nor the helper apps broken_vassal writes into
            # the run dir: not the user's code, and gone once the run ends ("No source for code" in a report).
            omit = [*settings.omit, f"{self.dir}/*", f"{runs_root()}/*"]
            bootstrap_settings = dict(
                asdict(settings), omit=omit, data_file=str(self.data_dir / DATA_NAME), problems=str(self.problems)
            )
            self.settings_path.write_text(json.dumps(bootstrap_settings, indent=2))
        except BaseException:
            self.close()
            raise

    @property
    def path_dir(self) -> Path:
        """The directory put on every vassal's ``pythonpath``: coverage.py and the bootstrap, nothing else."""
        return self.dir / "path"

    @property
    def data_dir(self) -> Path:
        """Where vassal processes write their data files."""
        return self.dir / "data"

    @property
    def settings_path(self) -> Path:
        """The JSON settings the bootstrap reads (its path is in the vassal's ``PYTEST_EMPEROR_COV``)."""
        return self.dir / "settings.json"

    @property
    def problems(self) -> Path:
        """Lines appended by vassals that could not measure (no coverage.py, a bad config), one per process."""
        return self.dir / "problems.log"

    def vassal_options(self) -> list[tuple[str, str]]:
        """The uWSGI options every vassal gets (through the emperor's ``--vassals-include``)."""
        return [
            ("pythonpath", str(self.path_dir)),
            # shared-import: in the master before the workers fork, with or without lazy-apps (docs/uwsgi-behaviour.md)
            ("shared-import", BOOTSTRAP_MODULE),
            ("env", f"{SETTINGS_ENV}={self.settings_path}"),
            # Workers save their data in atexit handlers, which skip-atexit skips (they _exit), and in Python's
            # own at interpreter teardown, which skip-atexit-teardown skips (an app's uwsgi.atexit set after the
            # bootstrap's replaces the bootstrap's chained one): measuring wins.
            ("skip-atexit", "false"),
            ("skip-atexit-teardown", "false"),
        ]

    def emperor_flags(self) -> list[str]:
        """The emperor options a measured run needs."""
        # A stop (message 0) SIGINTs the workers, and one still finishing a request (its response already sent,
        # its log line not yet written) then exits without running atexit handlers: its data would be lost. A
        # graceful stop (message 2) lets it finish the request first (docs/uwsgi-behaviour.md).
        return ["--emperor-graceful-shutdown"]

    def collect(self) -> tuple[list[Path], list[str]]:
        """The complete data files the vassals wrote, and a line for each problem (a file cut short, a vassal
        that could not measure). Call once the emperor has stopped."""
        from coverage import CoverageData

        good: list[Path] = []
        problems: list[str] = []
        for path in sorted(self.data_dir.glob(f"{DATA_NAME}.*")):
            try:
                CoverageData(basename=str(path)).read()
            except Exception as exc:  # a file cut short: coverage's DataError, or sqlite3.DatabaseError
                problems.append(f"left out {path.name}, not complete coverage data (killed while saving?): {exc}")
                continue
            good.append(path)
        if self.problems.exists():
            problems.extend(sorted(set(self.problems.read_text(errors="replace").splitlines())))
        return good, problems

    def export_to(self, data_file: Path) -> list[str]:
        """Move the vassals' data files next to ``data_file`` as its parallel files (``<data_file>.<suffix>``),
        which pytest-cov's ``combine()`` merges into its report. Return the problems."""
        good, problems = self.collect()
        for path in good:
            shutil.move(str(path), f"{data_file}{path.name[len(DATA_NAME) :]}")
        return problems

    def combine_into(self, data_file: Path) -> tuple[int, list[str]]:
        """Replace ``data_file`` with the combined data of the vassals; return how many process files went into
        it, and the problems."""
        from coverage import Coverage

        good, problems = self.collect()
        cov = Coverage(data_file=str(data_file), config_file=self.settings.config_file or False)
        cov.erase()
        if good:  # combine([]) would take any .coverage.* lying next to data_file instead
            cov.combine([str(p) for p in good], keep=True)  # ours to delete, with the whole dir
            cov.save()
        return len(good), problems

    def close(self) -> None:
        """Remove the coverage dir."""
        shutil.rmtree(self.dir, ignore_errors=True)


def from_pytest_cov(config: pytest.Config) -> tuple[VassalCoverage, Path] | None:
    """The coverage dir for this session's vassals and pytest-cov's data file, or None when pytest-cov is not
    measuring (``--no-cov``, or not started)."""
    plugin: Any = config.pluginmanager.getplugin("_cov")
    controller: Any = getattr(plugin, "cov_controller", None)
    cov: Any = getattr(controller, "cov", None)
    if cov is None:
        return None
    # The vassals run the measured code, so pytest's own process may import and run none of it: not a problem.
    cov.config.disable_warnings = [*cov.config.disable_warnings, "no-data-collected", "module-not-imported"]
    # pytest-cov resolves its paths in the dir it started in (its ``topdir``), whatever a test chdir'ed to since.
    base = Path(controller.topdir)
    return VassalCoverage(CoverageSettings.from_config(cov.config, base)), base / cov.config.data_file


def for_current_dir(sources: Sequence[str]) -> tuple[VassalCoverage, Path]:
    """The coverage dir for ``emperor-dev up --cov [SOURCE]`` and the data file to combine into, configured as
    ``coverage run --source`` would be in the current directory (``.coveragerc``, ``[tool.coverage]``...)."""
    from coverage import Coverage

    base = Path.cwd()
    config = Coverage(source=list(sources) or None).config
    return VassalCoverage(CoverageSettings.from_config(config, base)), base / config.data_file
