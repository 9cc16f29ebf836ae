"""The real Claude Code CLI (npm ``@anthropic-ai/claude-code``) against a live gateway, run as a
user would: a fresh HOME, only ``ANTHROPIC_BASE_URL`` and ``ANTHROPIC_AUTH_TOKEN`` (a real tf-
key) set, plus the switches that stop its non-essential traffic (this machine reaches package
registries only). The simulator's ``[[call: Write {...}]]`` directive makes the model call
Claude Code's Write tool; Claude Code writes the file, sends the tool result back and the model
answers: a multi-turn task with a tool, through the bundled catalog's model aliases.

The CLI is installed once into ``var/npm/`` and reused. CI must run this test: it skips (with the
reason) only when npm is absent and ``CI`` is not ``true``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from gateway import catalog, metering
from gateway.models import UsageRecord

pytestmark = pytest.mark.e2e

# The release the issue was reported against, pinned so a new release cannot change the suite
# under us; raise it on purpose (and run this test) to try a newer one.
CLAUDE_CODE_VERSION = "2.1.197"
PACKAGE = f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"
NPM_PREFIX = Path(settings.BASE_DIR) / "var" / "npm"
CLI = NPM_PREFIX / "node_modules" / ".bin" / "claude"
INSTALLED = NPM_PREFIX / "node_modules" / "@anthropic-ai" / "claude-code" / "package.json"


def _installed_version() -> str | None:
    try:
        return str(json.loads(INSTALLED.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture(scope="session")
def claude_cli() -> Path:
    """The Claude Code CLI, installed from npm into var/npm/ on first use."""
    if CLI.exists() and _installed_version() == CLAUDE_CODE_VERSION:
        return CLI
    npm = shutil.which("npm")
    if npm is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but npm is not installed: the Claude Code test must run in CI")
        pytest.skip("npm is not installed, so the Claude Code CLI cannot be installed")
    NPM_PREFIX.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--prefix", str(NPM_PREFIX), "--no-audit", "--no-fund", PACKAGE],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0 and CLI.exists(), f"npm install failed:\n{done.stderr[-3000:]}"
    return CLI


def run_claude(
    cli: Path, live: dict[str, Any], tmp_path: Path, prompt: str, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": f"{live['url']}/anthropic",
        "ANTHROPIC_AUTH_TOKEN": live["secret"],
        # No traffic beyond the gateway: telemetry, error reports, update checks, feedback.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_BUG_COMMAND": "1",
        **extra_env,
    }
    return subprocess.run(
        [
            str(cli),
            "-p",
            prompt,
            "--output-format",
            "json",
            # Non-interactive tool use: edits inside the working directory are accepted (the
            # test runs as root, where --dangerously-skip-permissions is refused).
            "--permission-mode",
            "acceptEdits",
            "--allowedTools",
            "Write",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def served(live: dict[str, Any]) -> list[UsageRecord]:
    metering.drain()
    return list(UsageRecord.objects.filter(account=live["account"]).order_by("created_at"))


@pytest.mark.parametrize(
    ("model_env", "served_model", "protocol"),
    [
        ({}, None, "anthropic"),  # nothing set: Claude Code's own default model id
        ({"ANTHROPIC_MODEL": "gpt-4o"}, "gpt-4o", "openai"),
    ],
    ids=["anthropic-default", "openai-model"],
)
def test_claude_code_writes_a_file_through_the_gateway(
    claude_cli: Path,
    live: dict[str, Any],
    tmp_path: Path,
    model_env: dict[str, str],
    served_model: str | None,
    protocol: str,
) -> None:
    catalog.seed(simulator_url=live["sim"])  # the bundled catalog and its aliases
    target = tmp_path / "work" / "out.txt"
    call = json.dumps({"file_path": str(target), "content": "hello"})
    prompt = f"Create the file. [[call: Write {call}]]"
    done = run_claude(claude_cli, live, tmp_path, prompt, **model_env)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert target.read_text() == "hello"
    result = json.loads(done.stdout)
    assert result["is_error"] is False
    assert result["num_turns"] >= 2  # the tool call, then the answer after its result
    rows = served(live)
    chat = [r for r in rows if r.endpoint == "chat"]
    assert chat, rows
    assert all(r.status == 200 for r in chat), [(r.model, r.status, r.error_code) for r in rows]
    by_protocol = {"anthropic": "simulator-anthropic", "openai": "simulator-openai"}
    if served_model is None:
        # Claude Code asked for its own ids (claude-opus-4-8, claude-haiku-4-5-...): aliases.
        assert all(r.requested_model.startswith("claude-") for r in chat)
        assert all(r.model in ("claude-opus-4-1", "claude-haiku-4-5") for r in chat)
        assert any(r.model == "claude-opus-4-1" for r in chat)
    else:
        # Claude Code sends its system prompt's notes as system messages inside ``messages``:
        # translated for this OpenAI-protocol model, turn after turn.
        assert [r.model for r in chat] == [served_model] * len(chat)
        assert all(r.requested_model == "" for r in chat)
    tool_turns = [r for r in chat if r.route.startswith(by_protocol[protocol])]
    assert len(tool_turns) >= 2
    assert all(r.input_tokens > 0 and r.output_tokens > 0 for r in chat)
