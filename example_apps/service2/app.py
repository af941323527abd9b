"""service2: a Flask app in its own virtualenv (venv-flask, made by example_apps/make_venvs.py)."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return "hello from service2\n"


@app.post("/echo")
def echo():  # type: ignore[no-untyped-def]
    return jsonify(method=request.method, body=request.get_data(as_text=True), host=request.host)
