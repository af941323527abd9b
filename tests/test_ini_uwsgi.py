"""Differential test: the sans-IO reader against the real uwsgi binary.

Each ini file is deployed like a vassal (``<tmp>/vassals/<name>.ini -> <tmp>/site/app.uwsgi.ini``) and
``uwsgi --ini <name>.ini --get k ...`` is run in the vassal dir; ``--get`` prints the *first* occurrence of
each option after all passes (core/uwsgi.c), which must equal ``Resolution.first``.
"""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from seed import SEED_INI

from pytest_emperor.engine.binary import uwsgi_version
from pytest_emperor.engine.deploy_plan import at_resolver, deployed, strip_one_eol

# Only these reach uwsgi: a UWSGI_* variable in our own environment would become an option.
ENV = {"PATH": "/usr/bin:/bin", "HOME": "/home/ck", "EMPTY_V": "", "SPACED": "a b"}

HANDWRITTEN = [
    # the production ini, with its idioms and its inline comment
    SEED_INI,
    # the strict-safe spelling
    "[uwsgi]\nchdir = @(exec://dirname $(realpath %P))\nhome = %(chdir)/venv\nsocket = /tmp/%n.api.sock\n",
    # comment swallowing, stray %, %%, %(
    "[uwsgi]\n; cpu at 100%\nneed-app = true\npct = 100% done\npp = 100%%\nparen = %(\nx = 5%\n",
    # sections, bare flags, blanks, CRLF, = in values, empty key
    "top = 1\n[other]\na = 1\n[uwsgi]\n  b  =  x = y \r\nbare\nempty =\n= novalue\n[other]\nc = 3\n",
    # env / file / placeholder passes and their interplay
    "[uwsgi]\ne = $(HOME)$(NOPE)|$(EMPTY_V)|$(SPACED)\nf = @(data.txt)\nf2 = @(exec://printf 'a\\r\\n')\n"
    "g = %(later)+%(e)\nlater = L\nr0 = %(r1)\nr0b = y%(r1)\nr1 = %(r2)\nr2 = z\n"
    "m = %(n + 1)\nn = 41\nm2 = %(n * 3 --)\nm3 = %(n / 0)\npl = %(plugin)\nplugin = $(HOME)\n"
    "set-placeholder = ph=@(exec://echo hi)\nph2 = %(ph)\nset = sv=$(HOME)\nsv2 = %(sv)\nini2 = %(ini)\n",
    # magic letters
    "[uwsgi]\nall = %p|%d|%s|%n|%e|%c|%o|%v|%k|%i|%j|%0|%1|%9|%P|%N|%D|%S|%C|%E|%O|%I|%J|%x|%V|%u|%U|%g|%G\n",
    # an exec that fails and one that prints nothing
    "[uwsgi]\nfail = [@(exec://false)]\nmulti = [@(exec://printf 'x\\n\\n')]\n",
]


def keys_of(text: str) -> list[str]:
    """Every distinct key that could appear in ``text`` (uwsgi ignores --get for keys it does not have)."""
    seen: list[str] = []
    for line in text.replace("\r", "").split("\n"):
        key = line.partition("=")[0].strip(" \t")
        # a `(` in the key: the --get argument is itself an option the passes would expand
        if key and key not in seen and not key.startswith(("[", ";", "#")) and "(" not in key:
            seen.append(key)
    return seen


def _limit() -> None:
    """Cap the child's memory, so a case we failed to predict as a loop cannot eat the shared machine."""
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


_NOT_READ = frozenset({"yaml", "yml", "json", "js", "xml", "xmlconfig", "config", "fallback-config"})


def compare(
    uwsgi_bin: Path,
    tmp: Path,
    text: str,
    name: str = "service1-beta",
    *,
    vassal_files: dict[str, str] | None = None,
    site_files: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> bool:
    """Deploy ``text`` (with other files next to the vassal link or the app's ini), run the binary and assert it
    agrees, exit status included; False (nothing run) if the reader predicts a loop or meets an unread loader."""
    env = ENV if env is None else env
    site = tmp / "site"
    site.mkdir(exist_ok=True)
    (site / "app.uwsgi.ini").write_text(text)
    vassals = tmp / "vassals"
    vassals.mkdir(exist_ok=True)
    (vassals / "data.txt").write_text("hello\n\n")
    for directory, files in ((vassals, vassal_files), (site, site_files)):
        for file_name, body in (files or {}).items():
            (directory / file_name).write_text(body)
    texts = [text, *(vassal_files or {}).values(), *(site_files or {}).values()]
    keys = [k for t in texts for k in keys_of(t) if k not in ("plugin", "set", "set-placeholder")]
    keys = list(dict.fromkeys([*keys, "ph", "sv", "ini"]))
    version = uwsgi_version(uwsgi_bin)
    with deployed(
        site / "app.uwsgi.ini", name, vassal_dir=vassals, version=version, binary_path=str(uwsgi_bin), env=env
    ) as d:
        # A bare `%e` line is `ini` with an empty path, found by hypothesis: uWSGI exits with "realpath() of
        # failed", and so does the reader (fatal); loaders of other formats are not read, so nothing to compare.
        if any(option.key in _NOT_READ for option in d.ini.options):
            return False
        resolution = d.ini.resolve(env=env, at_resolver=d.resolver)
        # A self-referencing placeholder makes uWSGI itself expand until malloc fails (measured: minutes of
        # CPU and all the memory it can get); the reader reports it instead, and the binary is not run.
        if resolution.problems:
            return False
        fatal = [p for p in d.ini.problems if p.code in ("fatal", "missing-file")]
        # `--get` before `--ini`: an `if-*` the file leaves open would swallow the ones after it
        args = [str(uwsgi_bin)]
        for key in keys:
            args += ["--get", key]
        args += ["--ini", d.link.name]
        done = subprocess.run(
            args, cwd=d.vassal_dir, env=env, capture_output=True, timeout=60, check=False, preexec_fn=_limit
        )
    if fatal:
        assert done.returncode == 1, f"reader: {fatal}\nuwsgi:\n{done.stderr.decode(errors='replace')}"
        return True
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    expected = "".join(v + "\n" for v in (resolution.first(k) for k in keys) if v is not None)
    got = done.stdout.decode("utf-8", "surrogateescape")
    assert got == expected, f"ini:\n{text}\nkeys: {keys}"
    return True


@pytest.mark.parametrize("index", range(len(HANDWRITTEN)))
def test_handwritten_configs_match_uwsgi(uwsgi_bin: Path, tmp_path: Path, index: int) -> None:
    assert compare(uwsgi_bin, tmp_path, HANDWRITTEN[index])


# (top-level text, files in the vassal dir, files in the app dir)
MULTI_FILE = [
    # relative include: against the vassal dir (where the emperor runs the vassal), not the app dir
    ("[uwsgi]\na = 1\ninclude = common.ini\nb = %(s)\n", {"common.ini": "[uwsgi]\ns = /tmp/%n.sock|%x|%o\n"}, {}),
    ("[uwsgi]\na = 1\ninclude = common.ini\n", {}, {"common.ini": "[uwsgi]\ns = 1\n"}),
    # sections: `ini = :x` re-reads the last file read, %x and %o follow
    ("[uwsgi]\na = %x|%o\nini = :other\nc = 3\n[other]\no = %x|%o|%n\n", {}, {}),
    ("[uwsgi]\ninclude = inc.ini\nini = :extra\n", {"inc.ini": "[uwsgi]\ni = 1\n[extra]\ne = %x\n"}, {}),
    ("[uwsgi]\nini = other.ini:prod\n", {"other.ini": "[prod]\np = %x|%n\n[uwsgi]\nu = 1\n"}, {}),
    # inherit: appended after the passes, never expanded
    ("[uwsgi]\na = 1\ninherit = base.ini\nb = %(i)\n", {"base.ini": "[uwsgi]\ni = $(HOME)|%(a)|%n|%x\na = 2\n"}, {}),
    # logic blocks: true, false, unterminated, for with %(_), if-opt, nested in a false block
    (
        "[uwsgi]\nif-env = HOME\nh = %(_)\nendif =\nif-env = NOPE\nhttp = :80\nendif =\n"
        "if-not-env = NOPE\nn = %(_)\nendif =\nfor = a b  c\nf = x%(_)\nendfor =\nlast = 1\n",
        {}, {},
    ),
    ("[uwsgi]\nif-env = NOPE\nsocket = /tmp/x.sock\nmaster = true\n", {}, {}),
    ("[uwsgi]\nk = v\nif-opt = k=v\no = %(_)\nendif =\nif-not-opt = zz\nz = 1\nendif =\n", {}, {}),
    ("[uwsgi]\nif-exists = data.txt\ne = %(_)\nendif =\nif-dir = .\nd = 1\nendif =\nif-file = nope\nf = 1\n", {}, {}),
    ("[uwsgi]\nif-env = NOPE\nif-env = HOME\nx = 1\nendif =\ny = 2\n", {}, {}),
    ("[uwsgi]\nfor-times = 3\nt = %(_)\nend =\nfor-glob = *.txt\ng = %(_)\nendfor =\n", {}, {}),
    # an if block left open in an included file goes on in the including one
    ("[uwsgi]\ninclude = c.ini\nafter = 1\n", {"c.ini": "[uwsgi]\nif-env = NOPE\nin = 1\n"}, {}),
    # fatal: recursive logic, a missing include
    ("[uwsgi]\nif-env = HOME\nfor = a b\nx = 1\n", {}, {}),
    ("[uwsgi]\ninclude = missing.ini\n", {}, {}),
]


@pytest.mark.parametrize("index", range(len(MULTI_FILE)))
def test_includes_sections_and_logic_match_uwsgi(uwsgi_bin: Path, tmp_path: Path, index: int) -> None:
    text, vassal_files, site_files = MULTI_FILE[index]
    assert compare(uwsgi_bin, tmp_path, text, vassal_files=vassal_files, site_files=site_files)


def test_seed_socket_is_the_deploy_name(uwsgi_bin: Path, tmp_path: Path) -> None:
    (tmp_path / "app.uwsgi.ini").write_text(HANDWRITTEN[0])
    with deployed(tmp_path / "app.uwsgi.ini", "service1-beta") as d:
        r = d.ini.resolve(env=ENV, at_resolver=d.resolver)
        assert r.last("socket") == "/tmp/service1-beta.api.sock"
        assert r.last("chdir") == str(tmp_path.resolve())
    assert not d.link.exists() and not d.vassal_dir.exists()


def test_strip_one_eol() -> None:
    assert [strip_one_eol(s) for s in ("hello\n\n", "a\r\n", "x", "", "\r")] == ["hello\n", "a\r", "x", "", ""]


def test_missing_at_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        at_resolver(str(tmp_path))("nope.txt")
    with pytest.raises(ValueError, match="only exec"):
        at_resolver(str(tmp_path))("http://example.com/x")


_FRAGMENTS = [
    "a", "b1", " ", "  ", "\t", "%", "%%", "%(", ")", "(", "=", ";", "#", "-",
    "%(k1)", "%(k2)", "%(k3 + 1)", "%(k2 k1)", "$(HOME)", "$(UNSET_X)", "$(", "$(EMPTY_V)",
    "%n", "%p", "%d", "%e", "%c", "%s", "%o", "%v", "%0", "%1", "%P", "%N", "%j", "%i", "%k", "%q", "%_", "%\n",
    "\n", "\n[uwsgi]\n", "\n[x]\n", "\r", "5", "17",
]
_KEYS = ["k1", "k2", "k3", "k4", " k1", "k1 ", "[k2]", ";k3", "#k"]


@st.composite
def ini_texts(draw: st.DrawFn) -> str:
    lines = ["[uwsgi]"]
    for _ in range(draw(st.integers(1, 6))):
        key = draw(st.sampled_from(_KEYS))
        sep = draw(st.sampled_from([" = ", "=", " =", ""]))
        value = "".join(draw(st.lists(st.sampled_from(_FRAGMENTS), max_size=6)))
        lines.append(f"{key}{sep}{value}")
    # Not "%" as the very last byte: uWSGI 2.0's magic_sub then copies past its buffer (`len - i` bytes from
    # `i + 2`) and garbage may follow the value; the reader reports that `%` instead (magic-unknown).
    return "\n".join(lines) + draw(st.sampled_from(["\n", ""]))


@settings(
    max_examples=int(os.environ.get("INIFILE_DIFF_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=ini_texts())
def test_generated_configs_match_uwsgi(uwsgi_bin: Path, tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    assume(compare(uwsgi_bin, tmp_path_factory.mktemp("diff"), text))


_LOGIC_LINES = [
    "if-env = HOME", "if-env = NOPE", "if-env = SPACED=a b", "if-not-env = NOPE", "if-not-env = HOME",
    "if-exists = data.txt", "if-not-exists = data.txt", "if-opt = k1", "if-not-opt = k2=x", "for = a b",
    "for-times = 2", "endif =", "endfor =", "end =", "include = inc.ini", "ini = :other", "inherit = base.ini",
    "k1 = %(_)", "k2 = x%(_)y", "k3 = %x|%o", "k4 = %(k1)", "socket = /tmp/%n.sock", "k1 = plain",
]
_LOGIC_FILES = {
    "inc.ini": "[uwsgi]\nk2 = inc-%(_)\nk3 = %n|%x\n[other]\nk4 = inc-other\n",
    "base.ini": "[uwsgi]\nk1 = base\nk4 = %(k1)\n",
}


@st.composite
def logic_texts(draw: st.DrawFn) -> str:
    body = draw(st.lists(st.sampled_from(_LOGIC_LINES), min_size=1, max_size=8))
    other = draw(st.lists(st.sampled_from(["k1 = o", "k4 = %x", "endif =", "if-env = HOME"]), max_size=2))
    return "\n".join(["[uwsgi]", *body, "[other]", *other]) + "\n"


@settings(
    max_examples=int(os.environ.get("INIFILE_DIFF_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=logic_texts())
def test_generated_logic_and_includes_match_uwsgi(
    uwsgi_bin: Path, tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    assume(compare(uwsgi_bin, tmp_path_factory.mktemp("logic"), text, vassal_files=_LOGIC_FILES))
