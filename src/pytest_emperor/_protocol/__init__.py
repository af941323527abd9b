"""Private: the uwsgi wire codec and the clients (requests adapters, httpx transport) built on it."""
