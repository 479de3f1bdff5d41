"""The Audiobook tab as a user meets it: it opens with an example book read in; pressing the button
makes the M4B with its chapters (read back with the bundled ffmpeg), the quality report shows, and
Cancel stops a book being made."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import urljoin

import httpx
import imageio_ffmpeg
import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright pip package is not installed")

pytestmark = pytest.mark.browser

MAKE_TIMEOUT_MS = 300_000


def chapter_titles(m4b: Path) -> list[str]:
    meta = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(m4b), "-f", "ffmetadata", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return re.findall(r"^\[CHAPTER\][^\[]*?^title=(.*)$", meta, re.MULTILINE)


@pytest.mark.slow
def test_audiobook_tab_makes_its_example_book_and_cancel_stops_one(
    page: sync_api.Page, tmp_path: Path
) -> None:
    page.get_by_role("tab", name="Audiobook").click()
    about = page.locator("#audiobook-about")
    sync_api.expect(about).to_contain_text("Two Fables of Aesop")
    sync_api.expect(about).to_contain_text("2 chapters")
    sync_api.expect(page.locator("#audiobook-chapters")).to_contain_text("The Tortoise and the Hare")

    status = page.locator("#audiobook-status")
    page.locator("#audiobook-generate").click()
    error = page.locator(".toast-body.error")
    status.filter(has_text="Done").or_(error).first.wait_for(state="visible", timeout=MAKE_TIMEOUT_MS)
    if error.count():
        pytest.fail(f"the studio showed an error: {error.first.inner_text()!r}")
    sync_api.expect(status).to_contain_text("2 chapters")
    sync_api.expect(page.locator("#audiobook-quality-report")).to_contain_text(
        re.compile(r"Checked \d+ sentences")
    )
    link = page.locator("#audiobook-files a[href$='/book.m4b']")
    sync_api.expect(link).to_have_count(1)
    response = httpx.get(urljoin(page.url, link.get_attribute("href") or ""), timeout=30)
    assert response.status_code == 200
    (tmp_path / "book.m4b").write_bytes(response.content)
    assert chapter_titles(tmp_path / "book.m4b") == ["The Fox and the Grapes", "The Tortoise and the Hare"]

    # The same book again at half speed (made afresh, not the finished one): cancelled while it runs.
    page.locator("#audiobook-speed input[type=number]").fill("0.5")
    page.locator("#audiobook-speed input[type=number]").press("Enter")
    page.locator("#audiobook-generate").click()
    sync_api.expect(status).to_contain_text(re.compile(r"%|Queued"), timeout=30_000)
    page.locator("#audiobook-cancel").click()
    sync_api.expect(status).to_contain_text(re.compile(r"cancel", re.IGNORECASE), timeout=60_000)
