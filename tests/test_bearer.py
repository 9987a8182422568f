"""`Authorization: Bearer <token>`, read one way for gateway keys and the metrics token."""

import pytest
from django.test import RequestFactory

from gateway_project.lib.bearer import bearer_token


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer gk_abc", "gk_abc"),
        ("bearer  gk_abc ", "gk_abc"),
        ("BEARER gk_abc", "gk_abc"),
        ("Basic Z2s6YWJj", ""),
        ("Bearer", ""),
        ("gk_abc", ""),
        (None, ""),
    ],
)
def test_the_token_is_read_from_a_bearer_header_only(header, token):
    headers = {} if header is None else {"Authorization": header}

    assert bearer_token(RequestFactory().get("/", headers=headers)) == token
