"""service3's own tests, as its repo would have them: run with `pytest --emperor`."""


def test_path_info(app_vassal):
    response = app_vassal.request("GET", "/some/path")
    assert response.status_code == 200
    assert response.content == b"hello from service3 at /some/path\n"
