"""The studio as a user sees it: a real headless Chromium (Debian's, driven by Playwright) against `python app.py`.

Never `playwright install` (it downloads browsers); the system chromium is used instead. The `browser`
and `page` fixtures live in conftest.py (shared with the other browser test modules).
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

from studio.audio import decode  # noqa: E402
from studio.services.asr import Transcriber, transcript_error_rate, word_error_rate  # noqa: E402
from tests.test_browser_voices import download  # noqa: E402

if TYPE_CHECKING:
    from conftest import LiveServer

pytestmark = pytest.mark.browser

SENTENCE = "The quick brown fox jumps over the lazy dog."
GENERATE_TIMEOUT_MS = 120_000
STATE = 1  # the engines table's state column


def pick_voice(page: sync_api.Page, voice: str) -> None:
    """Gradio dropdowns are custom inputs: click, type, Enter."""
    box = page.locator("#speech-voice input")
    box.click()
    box.fill(voice)
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")  # blur: the dropdown commits its value
    sync_api.expect(box).to_have_value(re.compile(re.escape(voice)))


def test_speech_tab_generates_audio_that_says_the_typed_text(
    page: sync_api.Page, transcriber: Transcriber, tmp_path: Path
) -> None:
    sync_api.expect(page.get_by_role("tab", name="Speech")).to_have_attribute("aria-selected", "true")
    text = page.locator("#speech-text textarea")
    text.fill("")
    text.press_sequentially(SENTENCE)
    sync_api.expect(text).to_have_value(SENTENCE)
    pick_voice(page, "jm_kumo")

    page.locator("#speech-generate").click()
    link = page.locator("#speech-audio a[download]")
    link.wait_for(state="attached", timeout=GENERATE_TIMEOUT_MS)
    info = page.locator("#speech-info")
    sync_api.expect(info).to_contain_text("s of audio", timeout=GENERATE_TIMEOUT_MS)
    sync_api.expect(info).to_contain_text("jm_kumo")
    page.screenshot(path=tmp_path / "speech_tab.png", full_page=True)

    audio, rate = download(page, "speech-audio")

    duration = len(audio) / rate
    assert 1.5 <= duration <= 10.0, f"{duration:.2f} s of audio for one sentence"
    rms = float(np.sqrt(np.mean(np.square(audio))))
    assert rms > 0.01, f"the audio is (nearly) silent: RMS {rms:.4f}"
    shown = re.search(r"([\d.]+) s of audio", info.inner_text())
    assert shown and abs(float(shown.group(1)) - duration) < 0.2, info.inner_text()
    heard = transcriber.transcribe(audio, rate).text
    assert word_error_rate(SENTENCE, heard) <= 0.35, f"Whisper heard {heard!r}"


def test_speech_tab_speaks_chinese_with_the_language_on_auto(
    page: sync_api.Page, transcriber: Transcriber, tmp_path: Path
) -> None:
    chinese = "今天天气很好，我们一起去公园散步吧。"
    sync_api.expect(page.locator("#speech-language input")).to_have_value(re.compile("Auto"))
    page.locator("#speech-text textarea").fill(chinese)
    pick_voice(page, "jm_kumo")
    page.locator("#speech-generate").click()
    link = page.locator("#speech-audio a[download]")
    link.wait_for(state="attached", timeout=GENERATE_TIMEOUT_MS)
    page.screenshot(path=tmp_path / "speech_tab_chinese.png", full_page=True)
    href = link.get_attribute("href")
    assert href, "the download link has no href"
    audio, rate = decode(httpx.get(urljoin(page.url, href), timeout=30).content)
    heard = transcriber.transcribe(audio, rate)
    assert heard.language == "zh", heard
    assert transcript_error_rate(chinese, heard.text, "zh") <= 0.35, f"Whisper heard {heard.text!r}"


def test_speech_tab_blend_hint_reads_as_typed(page: sync_api.Page) -> None:
    """The blend's asterisks survive the page (a dropdown's `info` drops them)."""
    sync_api.expect(page.locator("#speech-blend-hint")).to_contain_text("jf_alpha*0.7+jm_kumo*0.3")


def test_the_lexicon_panel_saves_a_word_that_try_it_then_says_and_deletes_it(
    page: sync_api.Page, transcriber: Transcriber
) -> None:
    pick_voice(page, "jm_kumo")  # try it speaks in the tab's engine and voice
    page.get_by_text("Pronunciation lexicon").click()
    page.locator("#pronunciation-word textarea").fill("Xqzt")
    page.locator("#pronunciation-respelling textarea").fill("bob")
    page.locator("#pronunciation-save").click()
    sync_api.expect(page.locator("#pronunciation-status")).to_contain_text(
        "Saved xqzt (en)"
    )  # kept lower-case
    sync_api.expect(page.locator("#pronunciation-table")).to_contain_text("bob")

    page.locator("#pronunciation-try").click()
    audio, rate = download(page, "pronunciation-audio")
    assert "bob" in transcriber.transcribe(audio, rate, "en").text.lower()

    page.locator("#pronunciation-delete").click()
    sync_api.expect(page.locator("#pronunciation-status")).to_contain_text("Deleted Xqzt")
    sync_api.expect(page.locator("#pronunciation-table")).not_to_contain_text("xqzt")


def test_engines_tab_shows_states_and_what_is_missing(page: sync_api.Page, tmp_path: Path) -> None:
    page.get_by_role("tab", name="Engines").click()
    table = page.locator("#engines-table")
    sync_api.expect(table).to_be_visible()
    sync_api.expect(table.get_by_role("columnheader").nth(STATE)).to_have_attribute("title", "state")

    # Data rows are role="row" divs; Gradio also keeps an aria-hidden <tr> that only sizes the columns.
    onnx = table.get_by_role("row").filter(has_text="Kokoro-82M (ONNX")
    sync_api.expect(onnx).to_have_count(1)
    sync_api.expect(onnx.get_by_role("gridcell").nth(STATE)).to_have_text(
        re.compile(r"^\s*(ready|loaded)\s*$")
    )

    torch = table.get_by_role("row").filter(has_text="Kokoro-82M (torch)")
    sync_api.expect(torch).to_have_count(1)
    sync_api.expect(torch.get_by_role("gridcell").nth(STATE)).to_have_text("needs-weights")
    sync_api.expect(torch).to_contain_text("3 files in weights/Kokoro-82M/")  # in short; in full below
    clipped = table.evaluate(
        """table => [...table.querySelectorAll('[role=gridcell]')]
            .filter(cell => cell.scrollWidth > cell.clientWidth + 2 || cell.scrollHeight > cell.clientHeight + 2)
            .map(cell => cell.innerText)"""
    )
    table.screenshot(path=tmp_path / "engines_table.png")
    assert clipped == [], clipped  # long paths and lists wrap, nothing is cut off
    page.get_by_text("What each engine needs, step by step").click()
    needs = page.locator("#engines-needs")
    sync_api.expect(needs).to_contain_text("Kokoro-82M/kokoro-v1_0.pth")
    sync_api.expect(needs).to_contain_text("hf download OpenMOSS-Team/MOSS-TTSD-v1.0")


def test_empty_text_shows_an_error_and_the_server_stays_up(
    page: sync_api.Page, live_server: LiveServer, tmp_path: Path
) -> None:
    text = page.locator("#speech-text textarea")
    text.fill("")
    sync_api.expect(text).to_have_value("")
    page.locator("#speech-generate").click()

    sync_api.expect(page.get_by_text("text is empty").first).to_be_visible(timeout=GENERATE_TIMEOUT_MS)
    page.wait_for_timeout(500)  # the toast slides in: let the screenshot show it
    page.screenshot(path=tmp_path / "empty_text_error.png")
    assert page.locator("#speech-audio a[download]").count() == 0
    assert httpx.get(live_server.url + "/health", timeout=10).status_code == 200


def test_voice_gallery_filters_by_language_and_plays_a_preview(
    page: sync_api.Page, transcriber: Transcriber
) -> None:
    page.get_by_role("tab", name="Voice gallery").click()
    table = page.locator("#gallery-table")
    sync_api.expect(table.get_by_role("row").filter(has_text="joe")).to_have_count(1)

    box = page.locator("#gallery-language input")
    box.click()
    page.get_by_role("option", name="Mandarin Chinese").click()
    sync_api.expect(table.get_by_role("row").filter(has_text="joe")).to_have_count(0)  # English only
    sync_api.expect(table.get_by_role("row").filter(has_text="jm_kumo")).to_have_count(1)

    table.get_by_role("gridcell", name="jm_kumo", exact=True).click()
    sync_api.expect(page.locator("#gallery-picked")).to_contain_text("jm_kumo", timeout=GENERATE_TIMEOUT_MS)
    link = page.locator("#gallery-audio a[download]")
    sync_api.expect(link).to_have_count(1, timeout=GENERATE_TIMEOUT_MS)
    href = link.get_attribute("href")
    assert href
    audio, rate = decode(httpx.get(urljoin(page.url, href), timeout=30).content)
    heard = transcriber.transcribe(audio, rate, "zh")
    assert heard.text and len(audio) / rate > 1.5, heard
