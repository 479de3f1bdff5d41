"""The Dialogue tab as a user drives it in a real headless Chromium against `python app.py`.

A script is pasted, the speaker table follows it, Generate makes one track whose subtitles say what
the audio says at their times, in voices that differ per speaker; Cancel stops a long one; a broken
script is explained with its line. The `browser`, `page` and `live_server` fixtures are in conftest.py.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright pip package is not installed")

from studio.services.asr import Transcriber, word_error_rate  # noqa: E402
from studio.services.speaker import SpeakerEncoder, similarity  # noqa: E402
from tests.test_browser_voices import download  # noqa: E402

if TYPE_CHECKING:
    from conftest import LiveServer

pytestmark = pytest.mark.browser

SCRIPT = (
    "Alice: Good morning everyone, welcome to the meeting.\n"
    "Bob: Thanks Alice, the numbers look good this month.\n"
    "Carol: Great, then let us start with the first topic.\n"
    "Alice: Bob, please go first."
)
SPEAKERS = ["Alice", "Bob", "Carol"]
GENERATE_TIMEOUT_MS = 180_000
CANCEL_TIMEOUT_MS = 15_000
SRT_CUE = re.compile(
    r"^\d+\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n(.+?)(?:\n\n|\n*\Z)",
    re.MULTILINE | re.DOTALL,
)
LABEL = re.compile(r"^\[([^\]]+)\] ")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str

    @property
    def speaker(self) -> str:
        match = LABEL.match(self.text)
        return match.group(1) if match else ""

    @property
    def words(self) -> str:
        return LABEL.sub("", self.text, count=1)


def parse_srt(text: str) -> list[Cue]:
    def seconds(h: str, m: str, s: str, ms: str) -> float:
        return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000

    return [
        Cue(seconds(*match.groups()[0:4]), seconds(*match.groups()[4:8]), match.group(9).strip())
        for match in SRT_CUE.finditer(text.replace("\r\n", "\n").strip() + "\n")
    ]


def open_dialogue_tab(page: sync_api.Page) -> sync_api.Locator:
    page.get_by_role("tab", name="Dialogue").click()
    sync_api.expect(page.get_by_role("tab", name="Dialogue")).to_have_attribute("aria-selected", "true")
    box = page.locator("#dialogue-script textarea")
    sync_api.expect(box).to_be_visible()
    return box


def paste_script(box: sync_api.Locator, script: str) -> None:
    """What a user does: select all, delete, paste."""
    box.fill("")
    box.fill(script)
    sync_api.expect(box).to_have_value(script)


def wait_for_status(page: sync_api.Page, text: str | re.Pattern[str], timeout: float) -> None:
    """Wait until #dialogue-status shows `text`; fail at once (with its message) on an error toast."""
    status = page.locator("#dialogue-status").filter(has_text=text)
    error = page.locator(".toast-body.error")
    status.or_(error).first.wait_for(state="visible", timeout=timeout)
    if error.count():
        pytest.fail(f"the studio showed an error instead of {text!r}: {error.first.inner_text()!r}")


def long_script(turns: int) -> str:
    return "\n".join(
        f"{('Alice', 'Bob')[i % 2]}: This is turn number {i + 1}, and it carries a few more words to speak."
        for i in range(turns)
    )


def test_a_broken_script_is_explained_with_its_line(page: sync_api.Page) -> None:
    box = open_dialogue_tab(page)
    paste_script(box, "[S1] Hello\n[S2]")
    parsed = page.locator("#dialogue-parsed")
    sync_api.expect(parsed).to_contain_text("⚠️")
    sync_api.expect(parsed).to_contain_text("line 2")


def test_dialogue_tab_generates_a_track_with_subtitles_in_distinct_voices(
    page: sync_api.Page, transcriber: Transcriber, tmp_path: Path
) -> None:
    box = open_dialogue_tab(page)
    paste_script(box, SCRIPT)

    parsed = page.locator("#dialogue-parsed")
    sync_api.expect(parsed).to_contain_text("4 turns, 3 speakers")
    sync_api.expect(parsed).not_to_contain_text("⚠️")
    for n, name in enumerate(SPEAKERS, 1):
        row = page.locator(f"#dialogue-voice-s{n}")
        sync_api.expect(row).to_be_visible()
        sync_api.expect(row).to_contain_text(f"S{n} · {name}")
    for n in (4, 5):
        sync_api.expect(page.locator(f"#dialogue-voice-s{n}")).to_be_hidden()

    page.locator("#dialogue-generate").click()
    wait_for_status(page, "Done", GENERATE_TIMEOUT_MS)
    status = page.locator("#dialogue-status")
    sync_api.expect(status).to_contain_text("4 turns")
    link = page.locator("#dialogue-audio a[download]")
    link.wait_for(state="attached")
    # Each file is a row whose link goes to the file (the name cell splits "S1" and ".wav").
    files = page.locator("#dialogue-files")
    for name in ("dialogue.srt", "S1.wav", "S2.wav", "S3.wav"):
        sync_api.expect(files.locator(f"a[href$='/{name}']")).to_have_count(1)
        sync_api.expect(files.get_by_role("row", name=name)).to_be_visible()
    sync_api.expect(files.locator("a[href$='/S4.wav']")).to_have_count(0)
    srt_box = page.locator("#dialogue-srt textarea")
    sync_api.expect(srt_box).to_have_value(re.compile(r"-->"))
    page.screenshot(path=tmp_path / "dialogue_tab.png", full_page=True)

    audio, rate = download(page, "dialogue-audio")
    duration = len(audio) / rate
    shown = re.search(r"Done: ([\d.]+) s", status.inner_text())
    assert shown and abs(float(shown.group(1)) - duration) < 0.1, (status.inner_text(), duration)

    cues = parse_srt(srt_box.input_value())
    assert cues, srt_box.input_value()
    turns = [speaker for speaker, _ in itertools.groupby(cue.speaker for cue in cues)]
    assert turns == ["Alice", "Bob", "Carol", "Alice"], [cue.text for cue in cues]
    assert all(cue.text.startswith(f"[{cue.speaker}] ") for cue in cues)
    assert all(0 <= cue.start < cue.end <= duration + 0.05 for cue in cues), (cues, duration)
    assert all(a.end <= b.start for a, b in itertools.pairwise(cues)), cues

    encoder = SpeakerEncoder()
    embeddings = []
    for cue in cues:
        segment = audio[int(cue.start * rate) : int(cue.end * rate)]
        heard = transcriber.transcribe(segment, rate).text
        assert word_error_rate(cue.words, heard) <= 0.35, (cue.text, heard)
        embeddings.append((cue.speaker, encoder.embed(segment, rate)))
    pairs = list(itertools.combinations(embeddings, 2))
    within = [similarity(a, b) for (s, a), (t, b) in pairs if s == t]
    across = [similarity(a, b) for (s, a), (t, b) in pairs if s != t]
    assert within and across
    assert min(within) > max(across), (within, across)


def test_cancel_stops_a_long_dialogue(page: sync_api.Page, live_server: LiveServer) -> None:
    box = open_dialogue_tab(page)
    paste_script(box, long_script(30))
    sync_api.expect(page.locator("#dialogue-parsed")).to_contain_text("30 turns, 2 speakers")

    status = page.locator("#dialogue-status")
    try:
        page.locator("#dialogue-generate").click()
        wait_for_status(page, re.compile(r"\d+%"), GENERATE_TIMEOUT_MS)
        page.locator("#dialogue-cancel").click()
        sync_api.expect(status).to_contain_text("cancelled", timeout=CANCEL_TIMEOUT_MS)
        page.wait_for_timeout(1000)  # no late progress update may overwrite the outcome
        sync_api.expect(status).to_contain_text("cancelled")
        assert page.locator("#dialogue-audio a[download]").count() == 0
    finally:  # never leave a long task running for the tests after this one
        for task in httpx.get(live_server.url + "/api/v1/tasks", timeout=10).json()["tasks"]:
            if task["status"] in ("pending", "running"):
                httpx.post(f"{live_server.url}/api/v1/task/{task['task_id']}/cancel", timeout=10)
