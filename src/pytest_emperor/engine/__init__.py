"""The engine: a real uWSGI emperor, its vassals, and what is read from them (see docs/architecture.md).

Nothing here imports :mod:`pytest_emperor.testing`."""
