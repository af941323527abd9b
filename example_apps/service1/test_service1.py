"""service1's own tests, as its repo would have them: run with `pytest --emperor`."""


def test_index(app_vassal):
    response = app_vassal.request("GET", "/")
    assert response.status_code == 200
    assert response.content == b"hello from service1\n"


def test_runs_in_its_own_virtualenv(app_vassal):
    info = app_vassal.request("GET", "/env").json()
    assert info["prefix"].endswith("venv-bottle")
