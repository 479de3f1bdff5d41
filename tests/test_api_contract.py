"""The OpenAPI contract, tried from outside: schemathesis generates requests for every operation from
`/openapi.json` (valid and invalid data, undeclared methods, then create -> use -> delete sequences
along the schema's links) against a live studio, and checks that no answer is a server error, that
every status, content type and body is the one the schema states, that what the schema calls valid
is accepted and what it calls invalid refused. Its settings are in tests/schemathesis.toml.

Before the run the studio is given real things to work on, so operations on an id reach its logic:
a voice cloned from speech the studio made, a training task with an imported Piper dataset and an
uploaded file, and a task to delete.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, LiveServer
from tests.test_training_piper import dataset_zip

pytestmark = pytest.mark.slow

CONFIG = ROOT / "tests" / "schemathesis.toml"
# The warnings a run may give, and the only operations they may name:
EXPECTED_WARNINGS = {
    # A delete succeeds once; the same id deleted again is a 404, as it should be. Generated engine
    # names are not engines (404); installing a real one is minutes of pip (test_environments.py).
    "Missing test data": {
        "DELETE /api/v1/task/{task_id}",
        "DELETE /api/v1/voices/{voice_id}",
        "POST /api/v1/engines/{name}/install",
    },
    # A generator cannot make a real clip, image or dataset zip (and mostly sends empty files), so
    # these mostly meet the file checks (415/422); tests/test_hostile_files.py sends them real and
    # broken files instead.
    "Schema validation mismatch": {
        "POST /api/v1/task/{task_id}/files/upload",
        "POST /api/v1/voices/upload",
        "POST /api/v1/tts/synthesize_file",
        "POST /api/v1/video",
        "POST /api/v1/audiobook",
        "POST /api/v1/training/{task_id}/dataset/import",
        # `config` is the config of the task's `kind` (studio/tasks/configs.py): which keys and values
        # are valid depends on the kind, and some on the server (a voice name not yet taken).
        "POST /api/v1/task/create",
    },
}


CANCELLED_KINDS = {"voice_fit", "dialogue", "video", "audiobook"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # Its voice's fit is the only one it waits for: a short search is as good for the contract.
    live = LiveServer(tmp_path_factory.mktemp("contract"), env={"STUDIO_FIT_QUICK_TRIALS": "4"}).start()
    yield live
    live.stop()


def made_speech(api: httpx.Client, text: str) -> bytes:
    response = api.post("/api/v1/tts/synthesize", json={"text": text, "voice_id": "jm_kumo", "format": "wav"})
    assert response.status_code == 200, response.text
    return response.content


def upload_voice(api: httpx.Client, voice_id: str, clip: bytes, fit: str) -> None:
    response = api.post(
        "/api/v1/voices/upload",
        files={"voice_file": ("clip.wav", clip, "audio/wav")},
        data={"voice_id": voice_id, "fit": fit, "language": "en"},
    )
    assert response.status_code == 200, response.text


def things_to_work_on(api: httpx.Client, scratch: Path) -> dict[str, str]:
    """Real ids for the operations that take one (see [parameters] in the config)."""
    clip = made_speech(
        api, "The quick brown fox jumps over the lazy dog, and then it runs far away into the quiet woods."
    )
    upload_voice(api, "fuzz-voice", clip, "quick")  # quick: it has a preview too
    upload_voice(api, "fuzz-voice-to-delete", clip, "none")
    training = api.post(
        "/api/v1/task/create",
        json={"config": {"kind": "training", "backend": "piper", "voice_name": "fuzzed"}},
    ).json()["task_id"]
    imported = api.post(
        f"/api/v1/training/{training}/dataset/import", files={"file": ("joe.zip", dataset_zip(scratch))}
    )
    assert imported.status_code == 200, imported.text
    uploaded = api.post(
        f"/api/v1/task/{training}/files/upload", files={"file": ("take1.wav", io.BytesIO(clip))}
    )
    assert uploaded.status_code == 200, uploaded.text
    to_delete = api.post(
        "/api/v1/task/create", json={"kind": "speech", "config": {"text": "Hi.", "voice": "joe"}}
    )
    assert to_delete.status_code == 200, to_delete.text
    return {
        "STUDIO_FUZZ_VOICE": "fuzz-voice",
        "STUDIO_FUZZ_VOICE_TO_DELETE": "fuzz-voice-to-delete",
        "STUDIO_FUZZ_TRAINING_TASK": training,
        "STUDIO_FUZZ_FILE": uploaded.json()["filename"],
        "STUDIO_FUZZ_TASK_TO_DELETE": to_delete.json()["task_id"],
    }


def test_every_operation_keeps_the_contract_under_generated_requests(
    server: LiveServer, tmp_path: Path
) -> None:
    with httpx.Client(base_url=server.url, timeout=300) as api:
        ids = things_to_work_on(api, tmp_path)
    with work_cancelled_as_it_comes(server.url):
        run = run_schemathesis(server.url, ids, tmp_path)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-20_000:]
    for warning, operations in warned_operations(report).items():
        assert operations <= EXPECTED_WARNINGS.get(warning, set()), (warning, operations, report[-20_000:])
    assert httpx.get(f"{server.url}/health").json()["status"] == "healthy"


def run_schemathesis(url: str, ids: dict[str, str], scratch: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(CONFIG),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
        ],
        cwd=scratch,
        env=os.environ | ids | {"NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=1500,
    )


@contextlib.contextmanager
def work_cancelled_as_it_comes(url: str) -> Iterator[None]:
    """Cancel, through the API, each voice fit, dialogue, video and audiobook the generated requests
    start. Schemathesis checks the answers, not the work behind them, and that work (fits for the real
    voice, thorough ones among them; a hundred short dialogues) would hold the cores while the
    requests it checks wait. The tasks made before the run (training, speech) are left alone."""
    done = threading.Event()

    def cancel_work() -> None:
        with httpx.Client(base_url=url, timeout=30) as api:
            while not done.wait(0.5):
                with contextlib.suppress(httpx.HTTPError):
                    for task in api.get("/api/v1/tasks").json()["tasks"]:
                        if task["kind"] in CANCELLED_KINDS and task["status"] in ("pending", "running"):
                            api.post(f"/api/v1/task/{task['task_id']}/cancel")

    canceller = threading.Thread(target=cancel_work, daemon=True)
    canceller.start()
    try:
        yield
    finally:
        done.set()
        canceller.join(30)


def warned_operations(report: str) -> dict[str, set[str]]:
    """The report's WARNINGS section as {warning's first words: operations it lists}."""
    section = report.partition("= WARNINGS =")[2].partition("= SUMMARY =")[0]
    warned: dict[str, set[str]] = {}
    heading = ""
    for line in section.splitlines():
        if title := re.match(r"(\w[\w ]*): \d+ operations?", line):
            heading = title.group(1)
            warned[heading] = set()
        elif line.strip().startswith("- ") and heading:
            warned[heading].add(line.strip()[2:])
    return warned
