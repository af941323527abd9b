"""Fails to import on purpose."""

import module_that_is_not_installed  # noqa: F401


def application(environ, start_response):  # never reached
    start_response("200 OK", [])
    return [b""]
