"""An app that crashes after starting, on request."""

import os
import signal


def application(environ, start_response):
    if environ["PATH_INFO"] == "/crash":
        os.kill(os.getppid(), signal.SIGKILL)  # the master: the whole vassal dies
    if environ["PATH_INFO"] == "/crash-worker":
        os._exit(1)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"still alive\n"]
