"""Debian's chromium, headless, for the tests that look at what a user sees (the report, the MLflow UI)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's: apt-get install -y chromium)")
    return found


def rendered_dom(url: str, width: int, wait_ms: int = 5000) -> str:
    """The page's DOM after its scripts ran (and its fetches answered) for `wait_ms` of virtual time."""
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},900",
                           f"--virtual-time-budget={wait_ms}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=180, check=True).stdout


def screenshot(url: str, width: int, height: int, out: Path, wait_ms: int = 5000) -> Path:
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={width},{height}", f"--virtual-time-budget={wait_ms}", f"--screenshot={out}", url],
                   capture_output=True, timeout=180, check=True)
    assert out.stat().st_size > 10_000  # a rendered page, not a blank one
    return out
