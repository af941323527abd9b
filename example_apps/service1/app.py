"""service1: a bottle app running in its own virtualenv (venv-bottle, made by example_apps/make_venvs.py)."""

import sys

import bottle

app = application = bottle.Bottle()


@app.route("/")
def index() -> str:
    return "hello from service1\n"


@app.route("/env")
def env() -> dict:
    # Proves the vassal runs in its own virtualenv, not in the interpreter uWSGI was built with.
    return {"prefix": sys.prefix, "bottle": bottle.__version__}
