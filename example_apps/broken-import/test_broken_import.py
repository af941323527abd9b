"""An app that fails to import still starts (no need-app) and answers every request with a 500."""


def test_serves_500(deploy_app, request):
    vassal = deploy_app(request.path.parent)
    assert vassal.request("GET", "/").status_code == 500
    assert any("module_that_is_not_installed" in line for line in vassal.error_lines())
