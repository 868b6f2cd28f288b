"""The rendered digest in a real browser (headless Chromium): it must look right, and stay safe."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import main

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],  # type: ignore[list-item]
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("width", [720, 375])
def test_the_digest_renders_as_a_clean_page_and_is_kept_as_a_screenshot(
    offline: Path, tmp_path: Path, width: int
):
    runner = CliRunner()
    assert runner.invoke(main, ["--config", str(offline), "fetch"]).exit_code == 0
    runner.invoke(main, ["--config", str(offline), "subscribers", "add", "view@example.org", "--why"])
    page = tmp_path / "digest.html"
    r = runner.invoke(
        main, ["--config", str(offline), "preview", "--subscriber", "view@example.org", "--output", str(page)]
    )
    assert r.exit_code == 0, r.output
    dom = chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    assert "Putin and Xi hail 'unprecedented' ties in talks on summit sidelines" in dom
    assert "Also reported by" in dom and "Unsubscribe" in dom
    assert "<script" not in dom
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"digest-{width}px.png"
    shot.unlink(missing_ok=True)
    chromium(tmp_path, f"--window-size={width},1400", f"--screenshot={shot}", page.as_uri())
    assert shot.exists() and shot.stat().st_size > 10_000
