"""service2's own tests, as its repo would have them: run with `pytest --emperor`."""


def test_index(app_vassal):
    assert app_vassal.request("GET", "/").content == b"hello from service2\n"


def test_post_body_reaches_flask(app_vassal):
    response = app_vassal.request("POST", "/echo", data=b"ping", headers=[("Content-Type", "text/plain")])
    assert response.status_code == 200
    assert response.json()["body"] == "ping"
    assert response.json()["host"] == app_vassal.host
