"""An upstream's 5xx is the provider's trouble, not the gateway's crash: the gateway logs it
once at WARNING with the request id, the status and the upstream, and Django's request
logger (whose ERROR lines alerting watches) stays quiet. The gateway's own 500 stays an ERROR."""

import logging

import pytest

from tests.logs import console_line
from tests.servers import closed_port_url


def chat(gateway, model: str, request_id: str):
    with gateway.client() as client:
        return client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers={"X-User-ID": "ada", "X-Request-ID": request_id},
        )


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_a_relayed_upstream_error_is_one_warning_of_the_gateways(gateway, upstream, process_log, status):
    response = chat(gateway, f"status-{status}", f"provider-bad-minute-{status}")

    assert response.status_code == status
    gateway.log_rows()
    lines = [r for r in process_log.records if r.levelno >= logging.WARNING and r.name.startswith(("django", "proxy"))]
    assert [(r.levelname, r.name) for r in lines] == [("WARNING", "proxy.relay")]
    assert f"[provider-bad-minute-{status}]: upstream default answered POST /v1/chat/completions with {status}" in (
        console_line(lines[0])
    )


def test_an_upstream_client_error_is_the_callers_and_logs_nothing(gateway, upstream, process_log):
    assert chat(gateway, "status-400", "bad-request").status_code == 400

    gateway.log_rows()
    assert [r for r in process_log.records if r.levelno >= logging.WARNING] == []


def test_an_unreachable_upstream_is_one_warning_not_a_django_error(gateway, upstream, settings, process_log):
    settings.OPENCLAW_URL = closed_port_url()

    assert chat(gateway, "gpt-4o-mini", "bridge-restarting").status_code == 502

    gateway.log_rows()
    lines = [r for r in process_log.records if r.levelno >= logging.WARNING]
    assert [(r.levelname, r.name) for r in lines] == [("WARNING", "proxy.views")]
    assert "[bridge-restarting]: upstream failed POST /v1/chat/completions" in console_line(lines[0])
    assert "at upstream default" in console_line(lines[0])


def test_the_gateways_own_failure_stays_an_error_with_its_traceback(gateway, upstream, monkeypatch, process_log):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug in a pipeline step")

    monkeypatch.setattr("proxy.views.model_of", broken)

    assert chat(gateway, "gpt-4o-mini", "real-bug").status_code == 500

    [error] = [r for r in process_log.records if r.levelno >= logging.ERROR]
    assert (error.name, error.levelname) == ("django.request", "ERROR")
    assert error.exc_info is not None and "a bug in a pipeline step" in str(error.exc_info[1])
