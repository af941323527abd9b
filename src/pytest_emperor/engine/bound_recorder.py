"""Run in every vassal's master, right after uWSGI has bound its sockets and before it loads the app: records
the identity of each unix socket file the master bound, in its run's ``uwsgi/bound`` file (runs.py).

A master that dies before it is ever ready (an app that fails to import under ``need-app``, a crash loop killed
mid-start) leaves its socket file behind: vacuum never ran. Only an identity recorded while a process of the
run served the file lets the run remove it (docs/uwsgi-behaviour.md, "Recovery"), and this is the one moment
every master that bound a file passes through. The emperor gives it to every vassal as ``shared-import``
through its ``--vassals-include``: uWSGI runs a shared import in the master after binding and ``chmod-socket``,
before the app (verified: with ``need-app`` and a missing module the record is made, then "no app loaded").

Standalone on purpose: it runs in the app's own Python, where pytest_emperor is not installed. It never raises:
a record it cannot make is left to the readiness-time record and the stop-time scan (emperor.py, runs.py).
Its lines are claims: a master may run as a less trusted user (an emperor's ``--uid``), so the run checks each
one against what it predicted and who owns the file before it acts on it (runs.py, ``_unlinkable``).
"""

import os
import sys

#: The environment marker every process of a run carries: the run dir (processes.py).
MARKER_ENV = "PYTEST_EMPEROR_RUN"
#: The name this file is imported under in a vassal (a copy in the run dir, put on its ``pythonpath``): one no
#: app would use, so it shadows nothing.
VASSAL_MODULE = "_pytest_emperor_bound"
#: Where the masters' claims go, under the run dir: a directory and a file the run creates (and hands to the
#: vassals' user when the emperor drops privileges).
CLAIMS_DIR = "uwsgi"
CLAIMS_FILE = "bound"


def identity_line(path: str, st: os.stat_result) -> str:
    """A line of a run's ``sockets`` file: a socket path and the identity of the file there (runs.py reads it)."""
    return f"{path}\t{st.st_dev} {st.st_ino} {st.st_ctime_ns}\n"


def record() -> None:
    """Append the identity line of each unix socket file this master bound to its run's claims file."""
    try:
        # _socket, not socket: socket.py's enums cost 14 ms per master, 0.7 s of CPU for 50 vassals starting.
        import _socket

        uwsgi = sys.modules.get("uwsgi")  # set up by uWSGI's Python plugin before any import runs
        run_dir = os.environ.get(MARKER_ENV)
        if uwsgi is None or not run_dir:
            return
        lines = []
        for fd in getattr(uwsgi, "sockets", ()):
            sock = _socket.socket(fileno=os.dup(fd))  # a dup: closing it leaves uWSGI's own fd open
            try:
                path = sock.getsockname() if sock.family == _socket.AF_UNIX else None
            finally:
                sock.close()
            if not isinstance(path, str) or not path.startswith("/") or "\n" in path or "\t" in path:
                continue  # TCP, abstract or unnamed: no file to remove
            lines.append(identity_line(path, os.lstat(path)))
        if lines:
            # One O_APPEND write: concurrent masters do not interleave. No O_CREAT: a closed run has no file.
            fd = os.open(os.path.join(run_dir, CLAIMS_DIR, CLAIMS_FILE), os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
            try:
                os.write(fd, "".join(lines).encode())
            finally:
                os.close(fd)
    except Exception:  # never break the vassal over a record
        pass


if __name__ == VASSAL_MODULE:  # imported by a vassal's master, not by pytest_emperor itself
    record()
