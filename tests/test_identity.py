"""Phase-1 identity: X-User-ID names the caller."""

import pytest


def test_a_caller_without_x_user_id_is_anonymous(gateway, upstream):
    with gateway.client() as client:
        client.get("/v1/models")

    assert upstream.last.headers["x-forwarded-user"] == "anonymous"
    assert gateway.log_rows()[0].user_id == "anonymous"


@pytest.mark.parametrize("user_id", ["alice", "a.b_c-d@example.com", "team:7", "x" * 128])
def test_a_valid_user_id_is_forwarded_and_logged(gateway, upstream, user_id):
    with gateway.client() as client:
        response = client.get("/v1/models", headers={"X-User-ID": user_id})

    assert response.status_code == 200
    assert upstream.last.headers["x-forwarded-user"] == user_id
    assert gateway.log_rows()[0].user_id == user_id


@pytest.mark.parametrize("user_id", ["", "x" * 129, "alice bob", "alice/bob", "ålice", "a;b", "<script>"])
def test_an_invalid_user_id_is_refused_with_400(gateway, upstream, user_id):
    with gateway.client() as client:
        response = client.get("/v1/models", headers={"X-User-ID": user_id.encode("utf-8")})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_user_id"
    assert "128" in error["message"]
    assert upstream.seen == []
    [row] = gateway.log_rows()
    assert (row.user_id, row.status) == ("", 400)
