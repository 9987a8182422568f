"""docs/operators/deploy.md as an operator follows it: its environment file passes
`check --deploy` through its `gateway-manage` wrapper, its systemd unit verifies, and its
nginx block, given a self-signed certificate and loopback ports, serves a real gateway with
streams intact."""

import datetime
import ipaddress
import json
import re
import shutil
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.docs_snippets import replaced, titled_block
from tests.servers import BASE_DIR, GatewayProcess, free_port

PAGE = BASE_DIR / "docs" / "operators" / "deploy.md"
NGINX = "/usr/sbin/nginx"


def block(title: str) -> str:
    return titled_block(PAGE, title)


def page_environment() -> dict[str, str]:
    """The page's environment file as the service reads it, each secret made by the command
    its comment gives."""
    variables, command = {}, None
    for line in block("/etc/organized-gateway/env").splitlines():
        if line.startswith("#"):
            made_by = re.search(r"(python3 -c '.*')$", line)
            command = made_by[1] if made_by else command
        elif line.strip():
            name, _, value = line.partition("=")
            if command:
                value = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout.strip()
            variables[name], command = value, None
    return variables


def gateway_manage(tmp_path, *arguments: str, **overrides: str) -> subprocess.CompletedProcess:
    """The page's wrapper, run with the page's environment file (and `overrides`)."""
    variables = {**page_environment(), **overrides}
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in variables.items()))
    wrapper = replaced(block("/usr/local/bin/gateway-manage"), "/etc/organized-gateway/env", str(env_file))
    wrapper = replaced(wrapper, "/srv/organized-gateway", str(BASE_DIR))
    script = tmp_path / "gateway-manage"
    script.write_text(wrapper)
    # Nothing inherited but PATH: everything comes from the file, as under systemd and cron.
    return subprocess.run(
        ["sh", str(script), *arguments], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120
    )


def test_the_environment_file_passes_check_deploy_but_for_the_hsts_choices(tmp_path):
    checked = gateway_manage(tmp_path, "check", "--deploy")

    assert checked.returncode == 0, checked.stderr
    assert set(re.findall(r"\((\w+\.[WE]\d+)\)", checked.stderr)) == {"security.W005", "security.W021"}, checked.stderr


def test_the_nginx_limits_are_above_the_gateways():
    config = block("/etc/nginx/sites-available/organized-gateway")
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", config)[1])
    body_megabytes = int(re.search(r"client_max_body_size (\d+)m;", config)[1])
    deadline, largest_body = _gateway_defaults()
    assert read_timeout > deadline
    assert body_megabytes * 1024 * 1024 > largest_body


def _gateway_defaults() -> tuple[float, int]:
    """UPSTREAM_DEADLINE and MAX_REQUEST_BYTES as a fresh gateway has them."""
    printed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; "
            "print(settings.UPSTREAM_DEADLINE, settings.MAX_REQUEST_BYTES)",
        ],
        cwd=BASE_DIR,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "gateway_project.settings", "DEBUG": "1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(printed[0]), int(printed[1])


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_the_systemd_unit_verifies(tmp_path):
    unit = tmp_path / "organized-gateway.service"
    unit.write_text(block("/etc/systemd/system/organized-gateway.service"))

    verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)

    # Unknown keys and bad values are only warnings, on stderr, naming the unit file.
    complaints = [line for line in verified.stderr.splitlines() if unit.name in line]
    assert verified.returncode == 0 and not complaints, verified.stderr


# --- nginx in front of a real gateway -----------------------------------------------------


def _self_signed(directory) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert, private = directory / "fullchain.pem", directory / "privkey.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert), str(private)


def nginx_config(directory, gateway_port: int, http_port: int, https_port: int) -> str:
    """The page's block on loopback ports with a self-signed certificate, wrapped in a minimal
    nginx.conf of its own (no daemon, no privileges dropped, everything under `directory`)."""
    cert, key = _self_signed(directory)
    site = block("/etc/nginx/sites-available/organized-gateway")
    site = replaced(site, "server 127.0.0.1:8000;", f"server 127.0.0.1:{gateway_port};")
    site = replaced(site, "listen 80;", f"listen 127.0.0.1:{http_port};")
    site = replaced(site, "listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;")
    site = replaced(site, "/etc/letsencrypt/live/gateway.example.org/fullchain.pem", cert)
    site = replaced(site, "/etc/letsencrypt/live/gateway.example.org/privkey.pem", key)
    temporary = "\n".join(f"    {kind}_temp_path {directory}/{kind};" for kind in ("client_body", "proxy"))
    temporary += "\n" + "\n".join(f"    {kind}_temp_path {directory}/{kind};" for kind in ("fastcgi", "uwsgi", "scgi"))
    # The gateway sends X-Accel-Buffering: no with event streams, which nginx obeys; ignored
    # here, so that streams prove the block's own proxy_buffering (a CDN may drop the header).
    ignored = "    proxy_ignore_headers X-Accel-Buffering;"
    return (
        f"daemon off;\nmaster_process off;\npid {directory}/nginx.pid;\nerror_log {directory}/error.log warn;\n"
        f"events {{ worker_connections 64; }}\nhttp {{\n    access_log off;\n{ignored}\n{temporary}\n{site}\n}}\n"
    )


@pytest.fixture
def behind_nginx(tmp_path, upstream, transactional_db):
    """A gateway as `make run` serves it (its proxy settings from the page's environment file),
    relaying to the tests' upstream, behind the page's nginx block."""
    page = page_environment()
    gateway = GatewayProcess(
        OPENCLAW_URL=upstream.url,
        **{name: page[name] for name in ("SECURE_PROXY_SSL_HEADER", "SECURE_SSL_REDIRECT", "CLIENT_IP_HEADER")},
    )
    http_port, https_port = free_port(), free_port()
    conf = tmp_path / "nginx.conf"
    nginx = client = None
    try:
        conf.write_text(nginx_config(tmp_path, int(gateway.url.rsplit(":", 1)[1]), http_port, https_port))
        tested = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)
        assert tested.returncode == 0, tested.stderr
        nginx = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(conf)], stderr=subprocess.PIPE, text=True)
        trusted = ssl.create_default_context(cafile=str(tmp_path / "fullchain.pem"))
        client = httpx.Client(base_url=f"https://127.0.0.1:{https_port}", verify=trusted, timeout=5)
        _wait_for(client, nginx)
        yield client, f"http://127.0.0.1:{http_port}"
    finally:
        if client is not None:
            client.close()
        if nginx is not None:
            nginx.terminate()
            nginx.communicate(timeout=10)
        gateway.stop()


def _wait_for(client: httpx.Client, nginx: subprocess.Popen) -> None:
    for _ in range(200):
        if nginx.poll() is not None:
            raise AssertionError(f"nginx exited: {nginx.stderr.read()}")
        try:
            client.get("/health")
            return
        except httpx.TransportError:
            time.sleep(0.05)  # start-up polling
    raise AssertionError("nginx did not start")


@pytest.mark.skipif(not shutil.which(NGINX), reason="needs Debian's nginx")
def test_a_stream_through_nginx_arrives_event_by_event(behind_nginx, upstream):
    client, _ = behind_nginx
    body = {"model": "gated", "stream": True, "messages": [{"role": "user", "content": "hi"}]}

    with client.stream("POST", "/v1/chat/completions", json=body, headers={"X-User-ID": "ada"}) as response:
        events = (line for line in response.iter_lines() if line.startswith("data: "))
        # The upstream holds the rest of the stream until the test has the first event: a
        # buffering proxy would deliver nothing until the upstream gave up waiting (10 s).
        first = next(events)
        finished_before_first = upstream.stream_finished.is_set()
        upstream.gate.set()
        rest = list(events)

    assert response.status_code == 200
    assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["content"] == "first"
    assert not finished_before_first
    assert rest[-1] == "data: [DONE]"


@pytest.mark.skipif(not shutil.which(NGINX), reason="needs Debian's nginx")
def test_https_pages_are_served_and_http_is_sent_to_https(behind_nginx):
    client, http_url = behind_nginx

    # SECURE_SSL_REDIRECT is on: without X-Forwarded-Proto this would redirect to itself.
    login = client.get("/admin/login/")
    plain = httpx.get(f"{http_url}/admin/login/", timeout=5)

    assert login.status_code == 200
    assert plain.status_code == 301
    assert plain.headers["location"].startswith("https://")


@pytest.mark.skipif(not shutil.which(NGINX), reason="needs Debian's nginx")
def test_a_body_over_the_gateways_limit_gets_the_gateways_own_413(behind_nginx):
    client, _ = behind_nginx
    too_large = b'{"model": "gpt-4o-mini", "input": "' + b"x" * (10 * 1024 * 1024) + b'"}'

    refused = client.post(
        "/v1/responses", content=too_large, headers={"X-User-ID": "ada", "Content-Type": "application/json"}
    )

    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "request_too_large"
