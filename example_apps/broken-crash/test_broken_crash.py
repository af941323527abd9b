"""An app that starts, serves, then kills its own master: the emperor curses it and brings it back."""


def test_master_crash_is_cursed_and_respawned(deploy_app, request):
    vassal = deploy_app(request.path.parent)
    first_pid = vassal.pid
    assert vassal.request("GET", "/").status_code == 200
    vassal.request("GET", "/crash")  # the worker still answers; its master is dead
    vassal.wait_cursed()
    vassal.wait_ready()  # the emperor respawns it: it had been loyal, so it is not throttled
    assert vassal.pid != first_pid
    assert vassal.request("GET", "/").content == b"still alive\n"
