"""The production deployment's app.uwsgi.ini, verbatim with its wsgi-file filled in: shared test data."""

SEED_INI = """\
[uwsgi]
app_root = @(exec://dirname $(realpath %P))
chdir = %(app_root)
home = %(app_root)/venv-bottle
plugin = python3
socket = /tmp/%n.api.sock
chmod-socket = 666
wsgi-file = app.py
processes = 2 # number of cores on machine
master = true
vacuum = true
"""
