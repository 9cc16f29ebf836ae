"""What the platform writes to its log: one JSON line per event."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import logging, django
django.setup()
logging.getLogger("django.request").warning("Not Found: %s", "/nowhere")
"""


def test_a_4xx_is_logged_once_as_json_even_with_debug_on() -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tokenfactory.settings",
        "DEBUG": "1",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "/nowhere" in line]
    assert len(lines) == 1, lines
    assert orjson.loads(lines[0])["logger"] == "django.request"
