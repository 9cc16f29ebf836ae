"""The real Codex CLI (npm `@openai/codex`) against the gateway, run as a user runs it: a fresh
CODEX_HOME holding only the config docs/api.md documents, the key in the environment, and
`codex exec` told to run tools without asking. The simulator's `[[call: NAME {json}]]` directive
makes the model call the tool Codex offers for running a command, so each turn really runs one;
a second turn resumes the session, so the whole history (tool calls, their output, reasoning)
goes back through the Responses API. On an OpenAI-protocol and an Anthropic-protocol model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway import catalog, metering
from gateway.catalog_seed import ALIASES
from gateway.models import CatalogModel, ModelAlias, UsageRecord
from tests import factories

pytestmark = pytest.mark.e2e

CODEX_VERSION = "0.171.0"
CACHE = Path(__file__).resolve().parents[2] / "var" / "npm-codex"
BINARY = CACHE / "node_modules" / ".bin" / "codex"
CONFIG = """\
model = "{model}"
model_provider = "token_factory"

[model_providers.token_factory]
name = "Token Factory"
base_url = "{url}/openai/v1"
env_key = "TOKENFACTORY_API_KEY"
wire_api = "responses"
"""


@pytest.fixture(scope="module")
def codex() -> Path:
    """The Codex CLI, installed from npm once into var/ and reused."""
    if BINARY.exists():
        return BINARY
    npm = shutil.which("npm")
    if npm is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but npm is missing: the Codex end-to-end test must run")
        pytest.skip("npm is not installed: cannot install the Codex CLI")
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(CACHE),
            "--no-audit",
            "--no-fund",
            f"@openai/codex@{CODEX_VERSION}",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return BINARY


def run_codex(
    codex: Path, home: Path, work: Path, secret: str, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CODEX_HOME": str(home / ".codex"),
        "TOKENFACTORY_API_KEY": secret,
    }
    return subprocess.run(
        [str(codex), "exec", *args],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )


def call(tool: str, **arguments: Any) -> str:
    return f"[[call: {tool} {json.dumps(arguments)}]]"


@pytest.mark.parametrize("model", ["sim-gpt", "sim-claude"])
def test_codex_runs_commands_through_the_gateway_over_two_turns(live, codex, tmp_path, model):
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".codex").mkdir(parents=True)
    work.mkdir()
    (home / ".codex" / "config.toml").write_text(CONFIG.format(model=model, url=live["url"]))
    flags = ["--dangerously-bypass-approvals-and-sandbox", "--skip-git-repo-check"]

    first = run_codex(
        codex,
        home,
        work,
        live["secret"],
        *flags,
        "-C",
        str(work),
        "Write the proof file. " + call("exec_command", cmd="printf codex-was-here > proof.txt"),
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert (work / "proof.txt").read_text() == "codex-was-here"

    second = run_codex(
        codex,
        home,
        work,
        live["secret"],
        "resume",
        "--last",
        *flags,
        "Copy it. " + call("exec_command", cmd="cp proof.txt copy.txt && echo copied"),
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert (work / "copy.txt").read_text() == "codex-was-here"

    metering.drain()
    records = list(UsageRecord.objects.filter(endpoint="responses").order_by("created_at"))
    # Each turn: the model calls the tool, then answers from its output.
    assert len(records) >= 4
    assert {r.model for r in records} == {model}
    assert all(r.status == 200 and r.stream for r in records)
    assert all(r.input_tokens > 0 and r.output_tokens > 0 and r.cost_micros > 0 for r in records)


def test_codex_with_websockets_on_falls_back_to_http_at_once(live, codex, tmp_path):
    """A provider with `supports_websockets = true` makes Codex try wss://.../responses first: the
    gateway refuses the upgrade cleanly, and Codex goes on over HTTP without a long wait."""
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".codex").mkdir(parents=True)
    work.mkdir()
    config = CONFIG.format(model="sim-gpt", url=live["url"]) + "supports_websockets = true\n"
    (home / ".codex" / "config.toml").write_text(config)
    started = time.monotonic()
    done = run_codex(
        codex,
        home,
        work,
        live["secret"],
        "--dangerously-bypass-approvals-and-sandbox",
        "--skip-git-repo-check",
        "[[say: over http]]",
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert "over http" in done.stdout
    # A 426 is "use HTTP": no reconnect attempts with backoff (a 403 gets five, over seconds).
    assert "Reconnecting" not in done.stderr
    assert elapsed < 15


@pytest.mark.parametrize("upstream", ["openai", "anthropic"])
def test_codex_applies_a_patch_with_its_freeform_tool(live, codex, tmp_path, upstream):
    """A model id Codex knows (its catalog gives it the freeform `apply_patch` tool, tool search,
    web search and reasoning with encrypted content), routed here to the simulator: the custom
    tool reaches the upstream as a function and its call comes back as a custom_tool_call that
    Codex applies; the hosted tools are dropped."""
    target = "sim-gpt" if upstream == "openai" else "sim-claude"
    factories.model("gpt-5.5", routes=[(live[upstream], target)], max_output_tokens=8192)
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".codex").mkdir(parents=True)
    work.mkdir()
    (home / ".codex" / "config.toml").write_text(CONFIG.format(model="gpt-5.5", url=live["url"]))
    patch = "*** Begin Patch\n*** Add File: hello.txt\n+hello from apply_patch\n*** End Patch\n"
    done = run_codex(
        codex,
        home,
        work,
        live["secret"],
        "--dangerously-bypass-approvals-and-sandbox",
        "--skip-git-repo-check",
        "Add the file. " + call("apply_patch", input=patch),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (work / "hello.txt").read_text() == "hello from apply_patch\n"

    # The next turn sends back the reasoning Codex got (include reasoning.encrypted_content): on
    # the Anthropic-protocol upstream it arrives as the thinking block it signed.
    signed = httpx.get(f"{live['sim']}/_sim/stats").json()["signed_thinking"]
    again = run_codex(
        codex,
        home,
        work,
        live["secret"],
        "resume",
        "--last",
        "--dangerously-bypass-approvals-and-sandbox",
        "--skip-git-repo-check",
        "[[say: All done.]]",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "All done." in again.stdout
    now = httpx.get(f"{live['sim']}/_sim/stats").json()["signed_thinking"]
    assert now > signed if upstream == "anthropic" else now == signed
    metering.drain()
    records = list(UsageRecord.objects.filter(endpoint="responses"))
    assert len(records) >= 3 and {r.model for r in records} == {"gpt-5.5"}
    assert all(r.status == 200 for r in records)


@pytest.mark.parametrize("model", ["sim-gpt", "sim-claude"])
def test_codex_needs_only_the_provider_and_the_key(live, codex, tmp_path, model):
    """No `model` in the config: Codex asks for its own default (codex-cli 0.171: `gpt-6.2-sol`,
    in code mode: its tools arrive in an `additional_tools` input item, the shell behind a
    JavaScript `exec` custom tool), which the bundled catalog's OpenAI aliases serve (routed here
    to the simulator)."""
    for pattern in {name for name, _, _ in ALIASES if name.startswith("gpt-")}:
        ModelAlias.objects.create(name=pattern, model=CatalogModel.objects.get(model_id=model))
    catalog.invalidate()
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".codex").mkdir(parents=True)
    work.mkdir()
    config = CONFIG.format(model="", url=live["url"]).replace('model = ""\n', "")
    assert "model =" not in config
    (home / ".codex" / "config.toml").write_text(config)
    done = run_codex(
        codex,
        home,
        work,
        live["secret"],
        "--dangerously-bypass-approvals-and-sandbox",
        "--skip-git-repo-check",
        "Write it. "
        + call(
            "functions__exec",
            input='await tools.exec_command({cmd: "printf aliased > alias.txt"});',
        ),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (work / "alias.txt").read_text() == "aliased"
    metering.drain()
    records = list(UsageRecord.objects.filter(endpoint="responses"))
    assert len(records) >= 2 and {r.model for r in records} == {model}
    assert all(r.status == 200 for r in records)
