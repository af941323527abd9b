"""A config that cannot start is cursed by the emperor, with its own error line as the reason."""

import pytest

from pytest_emperor import VassalCursed


def test_is_cursed_with_its_reason(deploy_app, request):
    with pytest.raises(VassalCursed, match="chdir"):
        deploy_app(request.path.parent)
