"""Two-person talking video through the REST API: the MP4 plays with the dialogue's audio, and each
person's mouth moves in their own turns only; bad uploads and scripts get clear 4xx answers."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from PIL import Image

from studio.services.portrait import Box, locate_face, locate_two_faces
from studio.services.talking_head import (
    RESOLUTIONS,
    RenderOptions,
    Track,
    compose_pair,
    compose_single,
    render,
)
from studio.services.video import mux
from tests.video_checks import (
    FFMPEG,
    SCRIPT,
    VOICES,
    audio_match,
    check_video,
    find_face,
    gray_frames,
    motion_by_turn,
    png,
    portraits,
    streams,
)


def post_video(client: TestClient, files: dict[str, tuple[str, bytes, str]], **form: object):  # type: ignore[no-untyped-def]
    data = {"script": SCRIPT, "voices": json.dumps(VOICES)} | {k: str(v) for k, v in form.items()}
    return client.post("/api/v1/video", data=data, files=files)


def two_portraits() -> dict[str, tuple[str, bytes, str]]:
    left, right = portraits()
    return {
        "image_left": ("left.png", png(left), "image/png"),
        "image_right": ("right.png", png(right), "image/png"),
    }


def download(client: TestClient, task: dict, name: str, folder: Path) -> Path:
    response = client.get(f"/api/v1/task/{task['task_id']}/files/download/{name}")
    assert response.status_code == 200, (name, response.text[:300])
    path = folder / name
    path.write_bytes(response.content)
    return path


@pytest.fixture(scope="module")
def finished(studio_client: TestClient) -> dict:
    response = post_video(studio_client, two_portraits(), wait="true", resolution="480p")
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["status"] == "completed", task
    return task


def test_the_video_plays_the_dialogue_and_each_mouth_moves_in_its_own_turns(
    studio_client: TestClient, finished: dict, tmp_path: Path
) -> None:
    assert {"video.mp4", "dialogue.wav", "dialogue.srt", "timing.json"} <= set(finished["files"])
    assert finished["result"]["engine"] == "embedded"
    assert finished["result"]["size"] == "848x480"
    video = download(studio_client, finished, "video.mp4", tmp_path)
    wav = download(studio_client, finished, "dialogue.wav", tmp_path)
    timing = json.loads(download(studio_client, finished, "timing.json", tmp_path).read_text())
    assert [t["speaker"] for t in timing] == ["S1", "S2", "S1", "S2"]
    assert all(t["phonemes"] for t in timing)  # Piper's and Kokoro's: the lips close on p/b/m
    measured = check_video(video, wav, timing)
    assert measured["streams"].size == (848, 480)
    srt = download(studio_client, finished, "dialogue.srt", tmp_path).read_text()
    assert srt.count("[S1]") >= 2 and srt.count("[S2]") >= 2, srt
    # Faces are reported in the uploaded image's pixels: what a client would send back as a box.
    left_face = finished["result"]["faces"]["S1"]
    assert left_face["found"] == "detected" and 90 <= left_face["box"][2] - left_face["box"][0] <= 130


def test_one_image_of_both_with_boxes_and_multitalk_not_set_up_falls_back_and_says_why(
    studio_client: TestClient, tmp_path: Path
) -> None:
    studio = studio_client.app.state.studio  # type: ignore[attr-defined]
    if not studio.video.multitalk_missing():
        pytest.skip("MultiTalk is set up here")
    left, right = portraits()
    both = np.concatenate([left, right], axis=1)  # 800 x 380: S1's face on the left, S2's on the right
    boxes = {"S1": [100, 40, 260, 200], "S2": [560, 20, 720, 180]}  # loose boxes around each head
    response = post_video(
        studio_client,
        {"image": ("both.png", png(both), "image/png")},
        script="[S1] Hi there.\n[S2] Hello.",
        bboxes=json.dumps(boxes),
        engine="multitalk",
        wait="true",
    )
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["status"] == "completed", task
    result = task["result"]
    note, missing = result["note"], studio.video.multitalk_missing()
    assert note.startswith(f"MultiTalk is not set up ({len(missing)} thing(s) missing, first: {missing[0]}")
    assert note.endswith(": used the embedded renderer"), note
    assert result["engine"] == "embedded"
    assert (
        "MultiTalk is not set up: " + "; ".join(missing)
        in studio_client.get(f"/api/v1/task/{task['task_id']}/logs").text
    )
    assert [result["faces"][p]["found"] for p in ("S1", "S2")] == ["detected in the given box"] * 2
    assert result["faces"]["S2"]["box"][0] > 400  # S2 is the person on the right
    info = streams(download(studio_client, task, "video.mp4", tmp_path))
    assert (info.video, info.audio, info.size) == ("h264", "aac", (848, 480))


def test_one_image_of_both_animates_each_mouth_in_its_own_turns(tmp_path: Path) -> None:
    left, right = portraits()
    both = np.concatenate([left, right], axis=1)
    composite = compose_single(both, locate_two_faces(both, (None, None)), RESOLUTIONS["480p"])
    rate, seconds = 24000, 6.0
    t = np.arange(int(seconds * rate)) / rate
    syllables = (0.2 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.float32)
    first = np.where(t < 3, syllables, 0).astype(np.float32)
    second = np.where(t >= 3, syllables, 0).astype(np.float32)
    sf.write(tmp_path / "d.wav", first + second, rate)
    tracks = (Track(first, rate, ((0.0, 3.0),)), Track(second, rate, ((3.0, 6.0),)))
    render(composite, tracks, tmp_path / "d.wav", tmp_path / "v.mp4", RenderOptions())
    timing = [{"speaker": "S1", "start": 0.0, "end": 3.0}, {"speaker": "S2", "start": 3.0, "end": 6.0}]
    motion = motion_by_turn(tmp_path / "v.mp4", timing, (848, 480), 25.0)
    for person in ("S1", "S2"):
        assert motion[person]["mouth"].own_turns > 3 * motion[person]["mouth"].other_turns, motion


def test_the_lips_close_on_p_b_m_where_the_engine_gives_phoneme_times(tmp_path: Path) -> None:
    """A steady loud vowel holds the mouth open; where the phoneme times say "m" (as Piper's do),
    the mouth in those frames moves most of the way back to the closed mouth of the silent start.
    The same audio without phoneme times keeps it open there."""
    left, right = portraits()
    composite = compose_pair(
        left, locate_face(left, None, "left"), right, locate_face(right, None, "right"), RESOLUTIONS["480p"]
    )
    rate, seconds = 24000, 3.0
    t = np.arange(int(seconds * rate)) / rate
    vowel = np.where(t >= 0.6, 0.2 * np.sin(2 * np.pi * 180 * t), 0).astype(np.float32)
    sf.write(tmp_path / "d.wav", vowel, rate)
    closures = ((1.2, 1.32), (2.2, 2.32))  # seconds: 3 frames each
    phonemes = (("a", 0.6, 1.2), ("m", *closures[0]), ("a", 1.32, 2.2), ("m", *closures[1]), ("a", 2.32, 3.0))

    def away_from_closed(timed: tuple[tuple[str, float, float], ...]) -> tuple[list[float], list[float]]:
        """Mean gray change of the speaker's mouth from the silent start: in the "m" frames, and
        in three frames of the vowel."""
        video = tmp_path / f"v{len(timed)}.mp4"
        tracks = (Track(vowel, rate, ((0.6, 3.0),), timed), Track(np.zeros_like(vowel), rate, ()))
        render(composite, tracks, tmp_path / "d.wav", video, RenderOptions())
        frames = list(gray_frames(video, (848, 480)))
        x, y, w, h = find_face(frames[0][:, :424])
        mouth = (slice(y + int(0.65 * h), y + h), slice(x + w // 4, x + 3 * w // 4))
        change = [
            float(np.abs(f[mouth].astype(np.int16) - frames[5][mouth].astype(np.int16)).mean())
            for f in frames
        ]
        return [change[round(start * 25) + 1] for start, _ in closures], [change[i] for i in (25, 45, 70)]

    at_m, vowel_open = away_from_closed(phonemes)
    assert max(at_m) < 0.5 * min(vowel_open), (at_m, vowel_open)
    untimed_at_m, _ = away_from_closed(())
    assert min(untimed_at_m) > 0.9 * min(vowel_open), (untimed_at_m, vowel_open)


def test_an_undecodable_image_is_refused_with_what_to_send(studio_client: TestClient) -> None:
    files = two_portraits() | {"image_left": ("left.png", b"this is not a picture", "image/png")}
    response = post_video(studio_client, files)
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert "image_left" in error["message"] and "JPEG, PNG" in error["message"], error


def test_an_image_of_the_wrong_type_is_refused(studio_client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.fromarray(portraits()[1]).save(buffer, format="GIF")
    files = two_portraits() | {"image_right": ("right.gif", buffer.getvalue(), "image/gif")}
    response = post_video(studio_client, files)
    assert response.status_code == 415, response.text
    assert "image_right is GIF" in response.json()["error"]["message"]


def test_an_image_claiming_a_huge_size_is_refused_before_decoding(studio_client: TestClient) -> None:
    # A real PNG whose header claims 60000 x 60000 pixels (3.6 gigapixels): refused from the header.
    small = png(portraits()[0])
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    bomb = (
        small[:8] + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk)) + small[33:]
    )
    response = post_video(studio_client, two_portraits() | {"image_left": ("big.png", bomb, "image/png")})
    assert response.status_code == 413, response.text
    assert "megapixel" in response.json()["error"]["message"]


def test_a_missing_portrait_is_named(studio_client: TestClient) -> None:
    files = {"image_left": two_portraits()["image_left"]}
    response = post_video(studio_client, files)
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert "image_right missing" in message, message


def test_a_third_speaker_is_refused_with_its_line(studio_client: TestClient) -> None:
    script = "Alice: Hello.\nBob: Hi Alice.\nCarol: May I join you?"
    response = post_video(studio_client, two_portraits(), script=script, voices="{}")
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert "line 3" in message and "S3 (Carol)" in message and "two people" in message, message


def test_a_portrait_without_a_face_needs_a_box(studio_client: TestClient) -> None:
    blank = np.full((300, 300, 3), 180, np.uint8)
    files = two_portraits() | {"image_right": ("wall.png", png(blank), "image/png")}
    response = post_video(studio_client, files)
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert "no face found in image_right" in message and "[x0, y0, x1, y1]" in message, message
    bad = post_video(studio_client, files, bboxes="{not json")
    assert bad.status_code == 422 and "bboxes is not valid JSON" in bad.json()["error"]["message"]


def test_a_given_box_is_used_where_no_face_is_found_and_refines_where_one_is() -> None:
    blank = np.full((300, 300, 3), 180, np.uint8)
    given = locate_face(blank, Box(100, 80, 200, 200), "a wall")
    assert given.found == "given" and given.face == Box(100, 80, 200, 200)
    assert given.face.x0 < given.mouth.center[0] < given.face.x1 and given.mouth.center[1] > 150
    left, _ = portraits()
    refined = locate_face(left, Box(60, 20, 280, 220), "left")  # a loose box around the head
    detected = locate_face(left, None, "left")
    assert refined.found == "detected in the given box" and refined.face == detected.face


def test_cancelling_stops_the_encoder_and_leaves_no_partial_video(tmp_path: Path) -> None:
    left, right = portraits()
    composite = compose_pair(
        left, locate_face(left, None, "l"), right, locate_face(right, None, "r"), RESOLUTIONS["480p"]
    )
    rate = 24000
    tone = (0.2 * np.sin(np.arange(10 * rate) * 2 * np.pi * 200 / rate)).astype(np.float32)
    silence = np.zeros_like(tone)
    sf.write(tmp_path / "d.wav", tone, rate)
    calls = []

    class Stop(Exception):
        pass

    def progress(fraction: float) -> None:
        calls.append(fraction)
        if len(calls) == 3:
            raise Stop

    output = tmp_path / "out.mp4"
    tracks = (Track(tone, rate, ((0.0, 10.0),)), Track(silence, rate, ()))
    with pytest.raises(Stop):
        render(composite, tracks, tmp_path / "d.wav", output, RenderOptions(), progress)
    assert not output.exists()
    alive = subprocess.run(["pgrep", "-f", str(output)], capture_output=True, check=False).stdout
    assert not alive.strip(), "ffmpeg still runs after the cancel"


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_a_generated_video_is_muxed_with_the_dialogue_as_h264_and_aac(codec: str, tmp_path: Path) -> None:
    """What MultiTalk's output goes through: its H.264 is copied, anything else encoded to H.264."""
    made = tmp_path / "made.mp4"
    cmd = [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "2"]
    subprocess.run([*cmd, "-c:v", codec, "-pix_fmt", "yuv420p", str(made)], check=True)
    rate = 24000
    speech = (0.3 * np.sin(np.arange(2 * rate) * 2 * np.pi * 220 / rate)).astype(np.float32)
    sf.write(tmp_path / "dialogue.wav", speech, rate)
    mux(made, tmp_path / "dialogue.wav", tmp_path / "video.mp4")
    info = streams(tmp_path / "video.mp4")
    assert (info.video, info.audio, info.size) == ("h264", "aac", (320, 240))
    assert abs(info.duration - 2.0) < 0.1
    correlation, lag = audio_match(tmp_path / "video.mp4", tmp_path / "dialogue.wav")
    assert correlation > 0.95 and abs(lag) < 0.05


def test_a_gpu_count_is_multitalks_and_must_exist_on_this_machine(studio_client: TestClient) -> None:
    have = len(studio_client.app.state.studio.allocator.devices)  # type: ignore[attr-defined]
    response = post_video(studio_client, two_portraits(), engine="multitalk", gpus=8)
    if have < 8:
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "not_enough_gpus", error
        assert f"MultiTalk on 8 GPUs was asked for, but this machine has {have} GPU" in error["message"]
    embedded = post_video(studio_client, two_portraits(), gpus=2)
    assert embedded.status_code == 422 and "embedded renderer runs on the CPU" in embedded.text
    low = post_video(studio_client, two_portraits(), engine="multitalk", preset="low-vram", gpus=4)
    assert low.status_code == 422 and "low-vram preset runs on one GPU" in low.text
    odd = post_video(studio_client, two_portraits(), engine="multitalk", gpus=3)
    assert odd.status_code == 422 and "gpus" in odd.text


def test_boxes_the_studio_draws_are_read_back_before_the_page_draws_them(tmp_path: Path) -> None:
    """The box editor's page writes a box's colour as "rgb(r, g, b)" when it draws it; a value sent
    back before that (its tab hidden, a busy machine) is the studio's own, and must be readable too."""
    from gradio.data_classes import FileData
    from gradio_image_annotation.image_annotator import AnnotatedImageData

    from studio.ui.video_handlers import FACE_COLOR, with_boxes
    from studio.ui.video_tab import portrait_editor

    picture = tmp_path / "face.png"
    Image.new("RGB", (120, 160), "white").save(picture)
    shown = with_boxes({"image": str(picture), "boxes": []}, [Box(10, 20, 90, 120)])
    assert shown is not None
    echoed = AnnotatedImageData(image=FileData(path=str(picture), orig_name="face.png"), boxes=shown["boxes"])
    read = portrait_editor("S1", "s1-test").preprocess(echoed)
    assert read is not None
    assert [(b["xmin"], b["ymin"], b["xmax"], b["ymax"], b["color"]) for b in read["boxes"]] == [
        (10, 20, 90, 120, FACE_COLOR)
    ]
