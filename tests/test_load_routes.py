"""manage.py load_routes: a TOML routes file in, idempotently; a bad file changes nothing and
its message names the line or the key."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.models import Account
from billing.models import Plan
from proxy.models import Route, RouteTarget, Upstream

pytestmark = pytest.mark.django_db

KEY = "sk-or-v1-secret-key-of-the-operator"
FILE = """
[upstreams.bridge]
base_url = "http://100.101.1.10:8080/"
first_byte_timeout = 20

[upstreams.openrouter]
base_url = "https://openrouter.ai/api"
auth = "api_key"
api_key_env = "ROUTES_TEST_KEY"
headers = { X-Title = "workshop" }
retries = 1

[routes]
"gpt-5" = [{ upstream = "bridge" }, { upstream = "openrouter", model = "openai/gpt-5", priority = 2 }]
"*" = [{ upstream = "openrouter" }]

[pins.accounts]
acme = "bridge"
"""


@pytest.fixture(autouse=True)
def operator_key(monkeypatch):
    monkeypatch.setenv("ROUTES_TEST_KEY", KEY)


def load(tmp_path, text: str, name: str = "routes.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    out = StringIO()
    call_command("load_routes", str(path), stdout=out)
    return out.getvalue()


def tables() -> list:
    return [
        list(Upstream.objects.order_by("name").values_list("name", "base_url", "auth", "headers", "retries")),
        list(
            RouteTarget.objects.order_by("route__model", "priority").values_list(
                "route__model", "upstream__name", "model", "priority", "weight"
            )
        ),
        list(Account.objects.values_list("user_id", "pinned_upstream")),
    ]


def test_it_loads_a_file_and_loading_it_again_changes_nothing(tmp_path):
    Account.objects.create(user_id="acme")
    first = load(tmp_path, FILE)
    loaded = tables()
    again = load(tmp_path, FILE)

    assert "2 upstreams, 2 routes, 1 pin: upstreams 2 added, 0 changed, 0 removed; routes 2 added" in first
    assert "pins 1 changed" in first
    assert "nothing changed" in again
    assert tables() == loaded
    assert loaded == [
        [
            ("bridge", "http://100.101.1.10:8080", "caller", {}, 2),
            ("openrouter", "https://openrouter.ai/api", "api_key", {"X-Title": "workshop"}, 1),
        ],
        [
            ("*", "openrouter", "", 1, 1),
            ("gpt-5", "bridge", "", 1, 1),
            ("gpt-5", "openrouter", "openai/gpt-5", 2, 1),
        ],
        [("acme", "bridge")],
    ]
    bridge = Upstream.objects.get(name="bridge")
    assert (bridge.first_byte_timeout, bridge.connect_timeout) == (20.0, None)  # None: the setting


def test_a_changed_file_changes_an_upstream_without_a_key(tmp_path):
    Account.objects.create(user_id="acme")
    load(tmp_path, FILE)

    changed = load(tmp_path, FILE.replace("100.101.1.10:8080", "100.101.1.11:8080"))

    assert "upstreams 0 added, 1 changed, 0 removed" in changed
    bridge = Upstream.objects.get(name="bridge")
    assert (bridge.base_url, bridge.api_key) == ("http://100.101.1.11:8080", "")


def test_a_targets_continuation_is_loaded_and_a_change_to_it_is_a_change(tmp_path):
    Account.objects.create(user_id="acme")
    load(tmp_path, FILE)
    fallback = 'model = "openai/gpt-5", priority = 2 }'

    out = load(tmp_path, FILE.replace(fallback, fallback[:-2] + ', continuation = "prefill" }'))

    assert "routes 0 added, 1 changed, 0 removed" in out
    continuations = RouteTarget.objects.order_by("route__model", "priority").values_list("continuation", flat=True)
    assert list(continuations) == ["", "", "prefill"]


def test_the_operators_key_is_read_from_the_environment_and_stored_encrypted(tmp_path, monkeypatch):
    Account.objects.create(user_id="acme")
    out = load(tmp_path, FILE)
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM proxy_upstream WHERE name = 'openrouter'")
        stored = cursor.fetchone()[0]

    assert Upstream.objects.get(name="openrouter").api_key == KEY
    assert KEY not in stored and KEY not in out
    monkeypatch.setenv("ROUTES_TEST_KEY", "sk-or-v1-a-new-key")
    assert "upstreams 0 added, 1 changed" in load(tmp_path, FILE)
    assert Upstream.objects.get(name="openrouter").api_key == "sk-or-v1-a-new-key"


def test_an_upstream_with_auth_api_key_needs_a_key_unless_one_is_stored(tmp_path):
    Account.objects.create(user_id="acme")
    keyless = FILE.replace('api_key_env = "ROUTES_TEST_KEY"\n', "")

    with pytest.raises(CommandError, match=r"upstreams\.openrouter\.api_key_env: auth api_key needs a key"):
        load(tmp_path, keyless)
    load(tmp_path, FILE)
    assert "nothing changed" in load(tmp_path, keyless)  # the key set before (or in admin) stays
    assert Upstream.objects.get(name="openrouter").api_key == KEY


def test_what_the_file_no_longer_names_is_removed(tmp_path):
    Account.objects.create(user_id="acme")
    load(tmp_path, FILE)
    smaller = (
        FILE.split("[routes]")[0].replace("[upstreams.openrouter]", "[upstreams.gone]").split("[upstreams.gone]")[0]
    )
    out = load(tmp_path, smaller + '[routes]\n"*" = [{ upstream = "bridge" }]\n')

    assert "upstreams 0 added, 0 changed, 1 removed; routes 0 added, 1 changed, 1 removed" in out
    assert tables()[:2] == [[("bridge", "http://100.101.1.10:8080", "caller", {}, 2)], [("*", "bridge", "", 1, 1)]]
    assert tables()[2] == [("acme", "bridge")]  # pins the file leaves out stay


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[routes]", "[routes\n"), "not valid TOML: "),
        (("first_byte_timeout = 20", "first_byte_timeout = 20\nfirst_byte_timeout = 30"), "line 5"),
        (("retries = 1", "retrys = 1"), "upstreams.openrouter: unknown key 'retrys'"),
        (('api_key_env = "ROUTES_TEST_KEY"', f'api_key = "{KEY}"'), "upstreams.openrouter.api_key: never write a key"),
        (('api_key_env = "ROUTES_TEST_KEY"', 'api_key_env = "NOT_SET_ANYWHERE"'), "NOT_SET_ANYWHERE is not set"),
        (('"http://100.101.1.10:8080/"', '"ftp://bridge"'), "upstreams.bridge.base_url: Enter a valid URL."),
        (('auth = "api_key"', 'auth = "token"'), "upstreams.openrouter.auth: Value 'token' is not a valid choice."),
        (("[upstreams.bridge]", "[upstreams.default]"), "upstreams.default.name: 'default' is the upstream at OPENCL"),
        (("first_byte_timeout = 20", "first_byte_timeout = -1"), "upstreams.bridge.first_byte_timeout: a number"),
        (('X-Title = "workshop"', 'Authorization = "Bearer x"'), "upstreams.openrouter.headers: Header 'Author"),
        (('{ upstream = "openrouter" }]', '{ upstream = "openrouter", weight = 0 }]'), 'routes."*"[0].weight: a whole'),
        (('{ upstream = "bridge" }', '{ upstream = "brigde" }'), "routes.gpt-5[0].upstream: no upstream 'brigde'"),
        (
            ('{ upstream = "bridge" }', '{ upstream = "bridge", continuation = "yes" }'),
            'routes.gpt-5[0].continuation: one of "", "prefill", "restart", not \'yes\'.',
        ),
        (('acme = "bridge"', 'nobody = "bridge"'), "pins.accounts.nobody: no such account."),
        (('acme = "bridge"', 'acme = "elsewhere"'), "pins.accounts.acme: no upstream 'elsewhere'"),
        (("retries = 1", 'probe = "FETCH /v1/models"'), "upstreams.openrouter.probe: A method (GET, HEAD"),
    ],
)
def test_a_bad_file_changes_nothing_and_its_message_names_the_line_or_key(tmp_path, change, message):
    Account.objects.create(user_id="acme")
    load(tmp_path, FILE.replace("openai/gpt-5", "openai/gpt-5-old"))
    before = tables()
    old, new = change
    assert old in FILE

    with pytest.raises(CommandError) as refused:
        load(tmp_path, FILE.replace(old, new), name="bad.toml")

    assert message in str(refused.value)
    assert str(refused.value).startswith(f"{tmp_path / 'bad.toml'}: ")
    assert str(refused.value).endswith("Nothing was changed.")
    assert tables() == before


def test_an_upstream_someone_is_pinned_to_is_not_removed(tmp_path):
    Account.objects.create(user_id="acme")
    Plan.objects.update_or_create(tier="tier3", defaults={"pinned_upstream": ""})
    load(tmp_path, FILE + '\n[pins.plans]\ntier3 = "openrouter"\n')
    without = FILE.replace('"*" = [{ upstream = "openrouter" }]', "").replace(
        ', { upstream = "openrouter", model = "openai/gpt-5", priority = 2 }', ""
    )
    without = without.split("[upstreams.openrouter]")[0] + "[routes]" + without.split("[routes]")[1]

    with pytest.raises(CommandError, match="'openrouter' is missing, and plan tier3 is pinned to it"):
        load(tmp_path, without)
    assert Upstream.objects.filter(name="openrouter").exists()


def test_without_a_file_it_loads_gateway_routes_file(tmp_path, settings):
    Account.objects.create(user_id="acme")
    path = tmp_path / "deployed.toml"
    path.write_text(FILE)
    settings.GATEWAY_ROUTES_FILE = str(path)
    out = StringIO()
    call_command("load_routes", stdout=out)

    assert out.getvalue().startswith(f"{path}: 2 upstreams")
    assert Route.objects.count() == 2


def test_without_a_file_or_the_setting_it_says_what_to_do(settings):
    settings.GATEWAY_ROUTES_FILE = ""
    with pytest.raises(CommandError, match="Name a routes file, or set GATEWAY_ROUTES_FILE"):
        call_command("load_routes")


def test_each_upstream_has_a_probe_the_file_may_change_or_leave_blank(tmp_path):
    Account.objects.create(user_id="acme")
    load(tmp_path, FILE.replace("retries = 1", 'retries = 1\nprobe = "HEAD  /api/health"'))
    first = dict(Upstream.objects.values_list("name", "probe"))
    load(tmp_path, FILE.replace("first_byte_timeout = 20", 'probe = ""'))

    assert first == {"bridge": "GET /v1/models", "openrouter": "HEAD /api/health"}
    assert dict(Upstream.objects.values_list("name", "probe")) == {"bridge": "", "openrouter": "GET /v1/models"}
