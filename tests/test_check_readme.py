"""The README's production-style ini passes ``emperor-dev check`` at the default ``--fail-on``, boot included:
users copy it, so it must be what the checker calls clean."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).parent / "emperor-dev"
MARKER = "in the production style:"


def readme_ini() -> str:
    text = (ROOT / "README.md").read_text()
    after = text[text.index(MARKER) :]
    match = re.search(r"```ini\n(.*?)```", after, re.S)
    assert match, f"no ```ini block after {MARKER!r} in README.md"
    return match.group(1)


def test_readme_production_ini_passes_check(tmp_path: Path, uwsgi_bin: Path, example_venvs: None) -> None:
    app = tmp_path / "shop"
    app.mkdir()
    (app / "app.uwsgi.ini").write_text(readme_ini())
    shutil.copy(ROOT / "example_apps" / "service1" / "app.py", app / "app.py")
    (app / "venv-bottle").symlink_to(ROOT / "example_apps" / "service1" / "venv-bottle")
    env = {k: v for k, v in os.environ.items() if not k.startswith("UWSGI_")}
    done = subprocess.run(
        [str(EXE), "check", "--uwsgi", str(uwsgi_bin), str(app)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 errors, 0 warnings" in done.stdout
