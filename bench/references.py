"""The peers `make bench` measures the gateway against, installed on demand into
bench/.references (git-ignored), never into the project's venv:

  Portkey   Portkey's gateway from npm, one Node.js process (its `gateway` bin), told by
            headers to call the bench's upstream as an OpenAI provider
  LiteLLM   LiteLLM's proxy from PyPI in a venv of its own, one process (its default), with
            one model whose api_base is the bench's upstream

Each install is done once and kept; a changed pin below installs again.
"""

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from bench.installs import Unavailable, installed, mark_installed, run

BASE = Path(__file__).resolve().parent.parent
FOLDER = BASE / "bench/.references"

# The newest release on npm. npm without the repository's lockfile resolves its
# `@hono/node-server: ^1.3.3` to 1.19.x, under which every streamed success becomes a 500;
# the repository pins (and patches) 1.13.5, so the bench installs that one beside it.
PORTKEY = ("@portkey-ai/gateway@1.15.2", "@hono/node-server@1.13.5")
# The newest LiteLLM whose `proxy` extra installs from PyPI as this project reaches it:
# 1.110 moved the proxy into a `litellm-proxy` package, and 1.108.8-1.109.x pin
# `litellm-proxy-extras` releases, that the registry does not serve here.
LITELLM = "litellm[proxy]==1.108.7"
NAMES = ("portkey", "litellm")
# A dummy credential: the stub upstream never checks one.
DUMMY_KEY = "sk-bench-dummy"
# LiteLLM refuses to start without a master key (callers present it, as the gateway's present
# theirs); a strong one per run.
LITELLM_MASTER_KEY = f"sk-{secrets.token_hex(32)}"


def install_portkey() -> Path:
    """Portkey's start script, installed with npm if it is not yet; needs Node.js ≥ 18."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        raise Unavailable("Node.js and npm are missing: apt-get install -y nodejs npm (or --references=litellm).")
    major = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip().lstrip("v")
    if int(major.split(".")[0] or 0) < 18:
        raise Unavailable(f"Portkey's gateway needs Node.js 18 or newer; this machine has {major}.")
    folder, spec = FOLDER / "portkey", " ".join(PORTKEY)
    script = folder / "node_modules/@portkey-ai/gateway/build/start-server.js"
    if not (installed(folder, spec) and script.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        print(f"Installing {spec} into {folder.relative_to(BASE)} ...", flush=True)
        command = [npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(folder), *PORTKEY]
        run(command, f"npm install {spec}")
        mark_installed(folder, spec)
    return script


def install_litellm() -> Path:
    """LiteLLM's `litellm` command, installed into a venv of its own if it is not yet."""
    folder = FOLDER / "litellm-venv"
    command = folder / "bin/litellm"
    if not (installed(folder, LITELLM) and command.exists()):
        print(f"Installing {LITELLM} into {folder.relative_to(BASE)} ...", flush=True)
        if not (folder / "bin/python").exists():
            run([sys.executable, "-m", "venv", str(folder)], f"python -m venv {folder}")
        pip = [str(folder / "bin/python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        run([*pip, LITELLM], f"pip install {LITELLM}")
        mark_installed(folder, LITELLM)
    return command


def portkey_command(script: Path, port: int) -> list[str]:
    # --headless: no console UI and no log stream, as a deployment runs it.
    return [shutil.which("node") or "node", str(script), f"--port={port}", "--headless"]


def portkey_headers(upstream: str) -> str:
    """The headers that route a call through Portkey to `upstream` as an OpenAI provider
    (127.0.0.1 is among its default trusted custom hosts)."""
    return f"x-portkey-provider: openai\nx-portkey-custom-host: {upstream}/v1\nAuthorization: Bearer {DUMMY_KEY}"


def litellm_command(command: Path, config: Path, port: int) -> list[str]:
    return [str(command), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]


def write_litellm_config(path: Path, upstream: str, model: str) -> Path:
    path.write_text(
        "model_list:\n"
        f"  - model_name: {model}\n"
        "    litellm_params:\n"
        f"      model: openai/{model}\n"
        f"      api_base: {upstream}/v1\n"
        f"      api_key: {DUMMY_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    return path


def litellm_headers() -> str:
    return f"Authorization: Bearer {LITELLM_MASTER_KEY}"


def litellm_env() -> dict[str, str]:
    """A master key; no call to the network: the model cost map from the package, no
    telemetry; no database or Redis of the gateway's (LiteLLM reads the same variable names)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    return {
        **{name: os.environ[name] for name in keep if name in os.environ},
        "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
    }
