"""The Voices & Cloning tab as a user drives it in a real headless Chromium against `python app.py`.

A clip of a voice the studio does not ship is uploaded, a quick fit makes a library voice that is
closer to the clip than the nearest built-in voice (the tab says so with numbers and plays both),
"Try it" speaks a typed sentence that Whisper hears back, and Delete removes the voice from the
table and from the REST API. The `browser`, `page` and `live_server` fixtures are in conftest.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin

import httpx
import numpy as np
import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright pip package is not installed")

from studio.audio import decode, encode  # noqa: E402
from studio.services.asr import Transcriber, word_error_rate  # noqa: E402
from tests.test_voices import REFERENCE_TEXT, unshipped_voice  # noqa: E402

if TYPE_CHECKING:
    from conftest import LiveServer

pytestmark = pytest.mark.browser

VOICE_ID = "ui_walker"
SENTENCE = "Please bring the blue folder to the office tomorrow morning."
FIT_TIMEOUT_MS = 600_000  # ~60 s on 2 idle cores; minutes on loaded ones
SPEAK_TIMEOUT_MS = 120_000
COMPARE = re.compile(r"fitted ([\d.]+) vs default `?([\w*+.]+)`? ([\d.]+)")


def fail_on_error_toast(page: sync_api.Page, ready: sync_api.Locator, timeout: float) -> None:
    """Wait for `ready`; fail at once, with the studio's message, if an error toast shows instead."""
    error = page.locator(".toast-body.error")
    ready.or_(error).first.wait_for(state="visible", timeout=timeout)
    if error.count():
        pytest.fail(f"the studio showed an error: {error.first.inner_text()!r}")


def download(page: sync_api.Page, player: str) -> tuple[np.ndarray, int]:
    link = page.locator(f"#{player} a[download]")
    link.wait_for(state="attached")
    href = link.get_attribute("href")
    assert href, f"#{player}: the download link has no href"
    response = httpx.get(urljoin(page.url, href), timeout=30)
    assert response.status_code == 200, response.text[:500]
    return decode(response.content)


def table_row(page: sync_api.Page) -> sync_api.Locator:
    # Data rows are role="row" divs; Gradio also keeps an aria-hidden <tr> that only sizes the columns.
    return page.locator("#voices-table").get_by_role("row").filter(has_text=VOICE_ID)


@pytest.mark.slow
def test_a_clip_becomes_a_voice_that_is_closer_than_the_default_and_can_be_deleted(
    page: sync_api.Page, live_server: LiveServer, transcriber: Transcriber, tmp_path: Path
) -> None:
    audio, rate = unshipped_voice()
    clip = tmp_path / "my voice.wav"
    clip.write_bytes(encode(audio, rate, "wav"))

    page.get_by_role("tab", name="Voices & Cloning").click()
    sync_api.expect(page.get_by_role("tab", name="Voices & Cloning")).to_have_attribute(
        "aria-selected", "true"
    )
    # A first visit finds an example clip loaded and its id filled in: Create would work as it is.
    sync_api.expect(page.locator("#voices-clip a[download]")).to_have_attribute(
        "href", re.compile(r"joe_reading")
    )
    sync_api.expect(page.locator("#voices-id input, #voices-id textarea").first).to_have_value("joe_example")
    page.locator("#voices-clip").get_by_role("button", name="Clear").click()  # the example goes
    page.locator("#voices-clip input[type=file]").set_input_files(clip)
    # The upload is done when the player shows the file (with its own download link).
    page.locator("#voices-clip audio, #voices-clip a[download]").first.wait_for(state="attached")
    page.locator("#voices-id input, #voices-id textarea").first.fill(VOICE_ID)
    sync_api.expect(page.locator("#voices-mode input[value=quick]")).to_be_checked()

    try:
        page.locator("#voices-create").click()
        compare = page.locator("#voices-compare").filter(has_text=COMPARE)
        fail_on_error_toast(page, compare, FIT_TIMEOUT_MS)
        for player in ("voices-fitted-audio", "voices-default-audio"):
            page.locator(f"#{player} a[download]").wait_for(state="attached")
        sync_api.expect(page.locator("#voices-status")).to_contain_text("is ready")
        page.wait_for_timeout(500)  # let the players draw their waveforms for the screenshot
        page.screenshot(path=tmp_path / "voices_tab.png", full_page=True)

        numbers = COMPARE.search(compare.inner_text())
        assert numbers, compare.inner_text()
        fitted, default_voice, default = float(numbers.group(1)), numbers.group(2), float(numbers.group(3))
        assert fitted > default, compare.inner_text()
        record = httpx.get(f"{live_server.url}/api/v1/voices/{VOICE_ID}", timeout=10).json()
        assert record["usable"] and record["fit"]["baseline_voice"] == default_voice
        assert abs(record["fit"]["similarity"] - fitted) < 0.001, (record["fit"], compare.inner_text())

        heard = page.locator("#voices-transcript textarea").input_value()
        assert word_error_rate(REFERENCE_TEXT, heard) <= 0.25, heard
        for player in ("voices-fitted-audio", "voices-default-audio"):
            sample, sample_rate = download(page, player)
            assert 1.5 < len(sample) / sample_rate < 10, player

        box = page.locator("#voices-try-text input, #voices-try-text textarea").first
        box.fill(SENTENCE)
        sync_api.expect(box).to_have_value(SENTENCE)
        page.locator("#voices-try").click()
        fail_on_error_toast(page, page.locator("#voices-try-audio a[download]"), SPEAK_TIMEOUT_MS)
        spoken, spoken_rate = download(page, "voices-try-audio")
        said = transcriber.transcribe(spoken, spoken_rate).text
        assert word_error_rate(SENTENCE, said) <= 0.25, f"Whisper heard {said!r}"

        sync_api.expect(table_row(page)).to_have_count(1)
        sync_api.expect(table_row(page)).to_contain_text("yes")
        picker = page.locator("#voices-pick input")
        picker.click()
        page.get_by_role("option", name=VOICE_ID, exact=True).click()
        sync_api.expect(picker).to_have_value(VOICE_ID)
        name_box = page.locator("#voices-rename-text input, #voices-rename-text textarea").first
        sync_api.expect(name_box).to_have_value(VOICE_ID)  # the picked voice's details are filled in
        page.locator("#voices-delete").click()
        sync_api.expect(page.locator("#voices-library-status")).to_contain_text(f"Deleted {VOICE_ID}")
        sync_api.expect(table_row(page)).to_have_count(0)
        assert httpx.get(f"{live_server.url}/api/v1/voices/{VOICE_ID}", timeout=10).status_code == 404
    finally:  # never leave the voice behind for the tests after this one
        httpx.delete(f"{live_server.url}/api/v1/voices/{VOICE_ID}", timeout=10)
