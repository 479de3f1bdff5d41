"""Hostile files at every upload: voices (`/api/v1/voices/upload`, `/api/v1/tts/synthesize_file`),
task files (`/api/v1/task/{id}/files/upload`, then the training task's `convert_audio` step), the Piper
dataset zip (`/api/v1/training/{id}/dataset/import`) and the video portraits (`/api/v1/video`).

Every file is made here, small: zero bytes, truncated and wrong-magic audio, a WAV header claiming more
than is sent, an 8-channel 192 kHz WAV, a two-hour recording (a 200 KB FLAC), decompression-bomb,
CMYK, 16-bit, EXIF-rotated and truncated images, a 1 GB zip bomb (1 MB on the wire), traversal,
absolute, backslash and symlink entries, damaged and empty zips, hostile file names. Each is either
refused with a 4xx in the studio's shape `{"error": {"code", "message"}}` whose message says what to
fix, and nothing is kept; or handled (mixed down, turned upright, converted, trimmed) and checked on
what came out. The server answers /health after each; the long file and the zip bomb are checked to
stay small in memory.
"""

from __future__ import annotations

import io
import json
import stat
import struct
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from PIL import Image

from studio import audio as audio_io
from studio.core import Studio
from studio.services.portrait import load_portrait
from studio.services.training import dataset
from studio.services.training.common import Workspace
from tests.test_training import wait_steps
from tests.video_checks import SCRIPT, VOICES, png, portraits

MB = 2**20
RATE = 24000
THREE_SPEAKERS = "Alice: Hello.\nBob: Hi Alice.\nCarol: May I join you?"  # refused after the images


# ---- files ------------------------------------------------------------------------------------------
def tone(seconds: float, rate: int = RATE, amplitude: float = 0.3) -> np.ndarray:
    return (amplitude * np.sin(np.arange(int(seconds * rate)) * 2 * np.pi * 220 / rate)).astype(np.float32)


def noise(seconds: float, rate: int = RATE, amplitude: float = 0.1) -> np.ndarray:
    """Seeded white noise: a voice clip's stand-in that Whisper dismisses quickly (a pure tone sends it
    through every fallback temperature: 10 s on a slow CPU)."""
    return (amplitude * np.random.default_rng(7).standard_normal(int(seconds * rate))).astype(np.float32)


def wav(audio: np.ndarray, rate: int = RATE, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def claiming(data: bytes, seconds: float) -> bytes:
    """A 16-bit mono WAV whose RIFF and data sizes claim `seconds` of audio (more than it holds)."""
    at = data.index(b"data")
    size = int(seconds * RATE) * 2
    return (
        data[:4] + struct.pack("<I", size + at) + data[8 : at + 4] + struct.pack("<I", size) + data[at + 8 :]
    )


def two_hour_flac() -> bytes:
    """4 s of noise, then two hours of silence: 200 KB of FLAC, 7204 s of audio."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", 8000, 1, format="FLAC", subtype="PCM_16") as out:
        out.write(noise(4, 8000))
        minute = np.zeros(60 * 8000, np.float32)
        for _ in range(120):
            out.write(minute)
    return buffer.getvalue()


def playlist(folder: Path) -> bytes:
    """An HLS playlist (sent as clip.wav) pointing ffmpeg at a 4 s recording elsewhere on the server:
    followed, it would decode as that recording."""
    secret = folder / "secret.wav"
    secret.write_bytes(wav(tone(4)))
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nfile://{secret}\n#EXT-X-ENDLIST\n".encode()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def image_bytes(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A real portrait PNG whose IHDR says width x height: tiny on disk, huge if decoded."""
    small = png(portraits()[0])
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return small[:8] + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + small[33:]


def sideways_jpeg() -> bytes:
    """The left portrait stored turned a quarter (as a phone stores it), EXIF orientation 6 saying so."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    turned = Image.fromarray(portraits()[0]).rotate(90, expand=True)
    return image_bytes(turned, "JPEG", exif=exif, quality=95)


def zip_of(entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_with_symlink() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("metadata.csv", "one.wav|Hello there.\n")
        link = zipfile.ZipInfo("wavs/one.wav")
        link.create_system = 3  # unix: the mode below is read
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def zip_bomb(megabytes: int) -> bytes:
    """A dataset zip: metadata.csv naming wavs/big.wav, which inflates to `megabytes` MB of zeros
    from about 1 KB per MB. Built from one deflated MB repeated (a full flush makes every MB the same
    bytes), so the test never compresses (or holds) the whole thing."""
    block = bytes(MB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(megabytes):
        crc = zlib.crc32(block, crc)
    metadata = b"big.wav|A very long line.\n"
    members = [
        ("metadata.csv", metadata, 0, zlib.crc32(metadata), len(metadata)),
        ("wavs/big.wav", piece * megabytes + b"\x03\x00", 8, crc, megabytes * MB),  # + an empty final block
    ]
    body, directory = b"", b""
    for name, data, method, checksum, size in members:
        encoded = name.encode()
        header = (checksum, len(data), size, len(encoded))
        directory += struct.pack(
            "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, *header, 0, 0, 0, 0, 0, len(body)
        )
        directory += encoded
        body += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, *header, 0) + encoded + data
    end = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(directory), len(body), 0
    )
    return body + directory + end


def multipart(field: str, filename: bytes, data: bytes, form: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """A multipart body sent as is, so a file name can hold bytes clients would escape (NUL)."""
    boundary = b"hostile-boundary"
    parts = [
        b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
        % (boundary, k.encode(), v.encode())
        for k, v in form.items()
    ]
    parts.append(
        b'--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n%s\r\n" % (boundary, field.encode(), filename, data)
    )
    return b"".join(parts) + b"--%s--\r\n" % boundary, {
        "content-type": f"multipart/form-data; boundary={boundary.decode()}"
    }


# ---- checks -----------------------------------------------------------------------------------------
def studio_of(client: TestClient) -> Studio:
    return client.app.state.studio  # type: ignore[attr-defined]


def refused(client: TestClient, response: httpx.Response, status: int, code: str, *says: str) -> str:
    """The answer is `status` in the studio's error shape with `code`, its message holds each of `says`
    (what is wrong and what to do), and the server still answers."""
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    message = body["error"]["message"]
    assert body["error"]["code"] == code, body
    for words in says:
        assert words in message, (words, message)
    assert "Traceback" not in message and len(message) < 600, message
    assert client.get("/health").status_code == 200
    return message


def kept_files(client: TestClient, *task_ids: str) -> set[str]:
    """Files under the data dir a request could have left: all but the engines' cache, the databases,
    task logs and other tests' task folders."""
    root = studio_of(client).settings.data_dir
    kept = set()
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        if not path.is_file() or parts[0] == "cache" or path.name == "task.log" or ".db" in path.name:
            continue
        if parts[0] == "tasks" and (len(parts) < 3 or parts[1] not in task_ids):
            continue
        kept.add(path.relative_to(root).as_posix())
    return kept


def library_ids(client: TestClient) -> list[str]:
    return sorted(v["id"] for v in client.get("/api/v1/voices").json()["voices"])


@pytest.fixture
def unchanged(studio_client: TestClient) -> Iterator[Callable[..., None]]:
    """Call it after a refusal: the voice library lists the same voices and no file appeared."""
    voices, files = library_ids(studio_client), kept_files(studio_client)

    def check(*task_ids: str) -> None:
        assert library_ids(studio_client) == voices
        assert kept_files(studio_client, *task_ids) - files == set()

    yield check


@contextmanager
def python_peak() -> Iterator[list[int]]:
    """The most the Python heap (numpy arrays included) held while the block ran, in bytes."""
    tracemalloc.start()
    peak: list[int] = []
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def delete_voice(client: TestClient, voice_id: str) -> None:
    assert client.delete(f"/api/v1/voices/{voice_id}").status_code == 200


# ---- voice clips: /api/v1/voices/upload and /api/v1/tts/synthesize_file ------------------------------
REFUSED_CLIPS = {  # case -> (file name, contents (given a scratch folder), status, code, message says)
    "zero bytes": ("clip.wav", lambda _: b"", 415, "unsupported_media", "empty"),
    "WAV cut inside its header": (
        "clip.wav",
        lambda _: wav(tone(4))[:30],
        415,
        "unsupported_media",
        "damaged",
    ),
    "MP3 cut after 100 bytes": (
        "clip.mp3",
        lambda _: audio_io.encode(tone(4), RATE, "mp3")[:100],
        415,
        "unsupported_media",
        "damaged",
    ),
    # handled: what arrived (2 of 4 s) is decoded, then judged like any clip
    "WAV cut halfway through its data": (
        "clip.wav",
        lambda _: wav(tone(4))[: 44 + 2 * RATE * 2],
        422,
        "too_short",
        "give at least 3 s",
    ),
    "PNG named clip.wav": (
        "clip.wav",
        lambda _: png(portraits()[0]),
        415,
        "unsupported_media",
        "holds no sound",
    ),
    "text named clip.wav": (
        "clip.wav",
        lambda _: b"this is not a recording\n" * 20,
        415,
        "unsupported_media",
        "not a recording",
    ),
    "HLS playlist naming a server file": ("clip.wav", playlist, 415, "unsupported_media", "not a recording"),
}


def send_clip(
    client: TestClient, route: str, name: str, data: bytes, voice_id: str = "hostile"
) -> httpx.Response:
    clip = {"voice_file": (name, data, "application/octet-stream")}
    if route == "upload":
        form = {"voice_id": voice_id, "fit": "none", "language": "en"}  # no language detection: faster
        return client.post("/api/v1/voices/upload", files=clip, data=form)
    return client.post("/api/v1/tts/synthesize_file", files=clip, data={"text": "Hello there."})


@pytest.mark.parametrize("route", ["upload", "synthesize_file"])
@pytest.mark.parametrize("case", list(REFUSED_CLIPS))
def test_a_hostile_clip_is_refused_and_nothing_is_kept(
    studio_client: TestClient, unchanged: Callable[..., None], tmp_path: Path, route: str, case: str
) -> None:
    name, make, status, code, says = REFUSED_CLIPS[case]
    message = refused(
        studio_client, send_clip(studio_client, route, name, make(tmp_path)), status, code, says
    )
    if status == 415:
        assert "upload a wav, mp3, flac, m4a or ogg" in message or "empty" in message, message
    unchanged()


def eight_channels(mono: np.ndarray, rate: int = 192000) -> bytes:
    """The same signal on each of 8 channels (3.5 s at 192 kHz: 10 MB)."""
    return wav(np.tile(mono[:, None], (1, 8)), rate)


HANDLED_CLIPS = {  # case -> (file name, contents, seconds kept, a warning it must carry or None)
    "WAV header claiming 2 hours, 4 s sent": ("clip.wav", lambda: claiming(wav(noise(4)), 7200), 4.0, None),
    # band-limited noise, so that its level survives the resampling to 24 kHz
    "8-channel 192 kHz WAV": (
        "clip.wav",
        lambda: eight_channels(audio_io.resample(noise(3.5), RATE, 192000)),
        3.5,
        None,
    ),
    "2-hour FLAC (200 KB)": (
        "clip.flac",
        two_hour_flac,
        4.0,
        "only the first 5 minutes of the file are read",
    ),
}


@pytest.mark.parametrize("case", list(HANDLED_CLIPS))
def test_an_odd_but_real_clip_is_handled_without_decoding_it_whole(
    studio_client: TestClient, case: str
) -> None:
    name, make, seconds, warning = HANDLED_CLIPS[case]
    data = make()
    with python_peak() as peak:
        response = send_clip(studio_client, "upload", name, data, voice_id="odd-clip")
    assert response.status_code == 200, response.text
    try:
        voice = response.json()
        assert abs(voice["duration"] - seconds) < 0.2, voice
        # channels are averaged: 8 channels peaking at 0.4 are not summed into one at 1.9 ("clipped")
        assert not [w for w in voice["warnings"] if w.startswith("clipped")], voice["warnings"]
        if warning:
            assert any(warning in w for w in voice["warnings"]), voice["warnings"]
        reference, rate = sf.read(io.BytesIO(studio_client.get("/api/v1/voices/odd-clip/reference").content))
        assert rate == RATE and reference.ndim == 1
        # two hours at 24 kHz would be 690 MB of float32: at most the first 5 minutes are decoded
        assert peak[0] < 200 * MB, f"{peak[0] / MB:.0f} MB"
    finally:
        delete_voice(studio_client, "odd-clip")
    assert studio_client.get("/health").status_code == 200


def npy_claiming_a_huge_array() -> bytes:
    buffer = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (1, 10**11, 32)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + bytes(256)


@pytest.mark.parametrize(
    ("case", "latent", "says"),
    [
        ("zero bytes", b"", "not a .npy array"),
        ("a pickle", npy(np.array([{"x": 1}], dtype=object)), "Python objects"),
        ("a header claiming 1.3 TB", npy_claiming_a_huge_array(), "bytes follow it"),
        ("cut short", npy(np.zeros((1, 50, 32), np.float32))[:300], "bytes follow it"),
    ],
)
def test_a_hostile_latent_is_refused_before_the_voice_is_kept(
    studio_client: TestClient, unchanged: Callable[..., None], case: str, latent: bytes, says: str
) -> None:
    files = {
        "voice_file": ("clip.wav", wav(tone(4)), "audio/wav"),
        "voice_latent": ("latent.npy", latent, "application/octet-stream"),
    }
    response = studio_client.post(
        "/api/v1/voices/upload", files=files, data={"voice_id": "latent-case", "fit": "none"}
    )
    refused(studio_client, response, 415, "unsupported_media", "voice_latent", says)
    assert not (studio_of(studio_client).library.root / "latent-case").exists()
    unchanged()


def test_hostile_clip_names_are_quoted_short_and_never_used_as_paths(
    studio_client: TestClient, unchanged: Callable[..., None]
) -> None:
    long_name = "x" * 3000 + ".wav"
    message = refused(
        studio_client,
        send_clip(studio_client, "upload", long_name, b"junk"),
        415,
        "unsupported_media",
        "xxx...",
    )
    assert len(message) < 300, message
    refused(
        studio_client,
        send_clip(studio_client, "upload", "../../x.wav", b"junk"),
        415,
        "unsupported_media",
        "could not decode",
    )
    body, headers = multipart(
        "voice_file", b"clip.wav\x00.exe", wav(tone(4)), {"voice_id": "nul", "fit": "none"}
    )
    response = studio_client.post("/api/v1/voices/upload", content=body, headers=headers)
    refused(studio_client, response, 415, "unsupported_media", "'.exe' is not a supported audio file")
    unchanged()


# ---- task files: /api/v1/task/{id}/files/upload, read by the training task's convert_audio ----------
class Report:
    """The step's reporting, kept (the test double the dataset tests use too)."""

    def __init__(self) -> None:
        self.logs: list[str] = []

    def log(self, message: str) -> None:
        self.logs.append(message)

    def step_progress(self, fraction: float) -> None:
        assert 0.0 <= fraction <= 1.0

    def check_cancelled(self) -> None:
        pass

    @property
    def cancelled(self) -> bool:
        return False


def create_training_task(client: TestClient) -> str:
    config = {"kind": "training", "backend": "kokoro_fit", "voice_name": "hostile"}
    response = client.post("/api/v1/task/create", json={"task_name": "hostile", "config": config})
    assert response.status_code == 200, response.text
    return response.json()["task_id"]


def test_task_uploads_stay_in_the_task_and_convert_skips_each_hostile_file_saying_why(
    studio_client: TestClient, tmp_path: Path
) -> None:
    client = studio_client
    task_id = create_training_task(client)
    folder = studio_of(client).store.folder(task_id)
    outside = kept_files(client)
    uploads: list[tuple[bytes | str, bytes]] = [
        ("../../picture.wav", png(portraits()[0])),
        ("/etc/text.wav", b"this is not a recording\n" * 20),
        ("..\\..\\cut.wav", wav(tone(4))[:30]),
        (b"play\x00list.wav", playlist(tmp_path)),
        ("x" * 300 + ".wav", wav(tone(2))),
        ("eight.wav", eight_channels(tone(3.5, 192000))),
        ("claims.wav", claiming(wav(tone(4)), 7200)),
    ]
    stored = {}
    for name, data in uploads:
        if isinstance(name, bytes):  # a NUL in the name: sent as is
            body, headers = multipart("file", name, data, {})
            response = client.post(f"/api/v1/task/{task_id}/files/upload", content=body, headers=headers)
        else:
            response = client.post(f"/api/v1/task/{task_id}/files/upload", files={"file": (name, data)})
        assert response.status_code == 200, (name, response.text)
        filename = response.json()["filename"]
        assert filename.startswith("inputs/") and "/" not in filename[len("inputs/") :], filename
        assert "\x00" not in filename and len(filename) <= len("inputs/") + 216 and filename.endswith(".wav")
        stored[filename] = data
    refused(
        client,
        client.post(f"/api/v1/task/{task_id}/files/upload", files={"file": ("zero.wav", b"")}),
        422,
        "empty_file",
        "is empty (0 bytes)",
    )
    for name in ("..", "."):
        refused(
            client,
            client.post(f"/api/v1/task/{task_id}/files/upload", files={"file": (name, b"x")}),
            422,
            "bad_filename",
            "needs a name",
        )
    on_disk = {p.relative_to(folder).as_posix(): p.read_bytes() for p in (folder / "inputs").iterdir()}
    assert on_disk == stored  # each kept as sent, inside the task's inputs/
    assert kept_files(client) == outside  # nothing outside the task's folder

    response = client.post(f"/api/v1/task/{task_id}/step/convert_audio", json={"params": {}})
    assert response.status_code == 200, response.text
    task = wait_steps(client, task_id)
    assert task["steps"]["convert_audio"] == "done", task["error_message"]
    result = task["result"]["steps"]["convert_audio"]
    reasons = {s["file"]: s["reason"] for s in result["skipped"]}
    expected = {
        "picture.wav": "holds no sound",
        "text.wav": "not a recording",
        "_.._cut.wav": "not a recording",
        "play_list.wav": "not a recording",
    }
    for file, says in expected.items():
        assert says in reasons.pop(file), (file, reasons)
    assert not reasons, reasons  # the 300-character name was cut keeping ".wav": converted
    assert result["files"] == 3 and abs(result["seconds"] - 9.5) < 0.2, result
    converted = folder / "_work" / "converted" / "eight.wav"
    audio, rate = sf.read(converted, dtype="float32")
    assert audio.ndim == 1 and rate == 22050
    assert abs(float(np.max(np.abs(audio))) - 0.3) < 0.02  # averaged, not summed to 1.3
    assert client.get("/health").status_code == 200


def test_a_recording_over_the_limit_is_converted_up_to_it_without_holding_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset, "MAX_RECORDING_SECONDS", 60.0)  # the step's limit is an hour
    workspace = Workspace(tmp_path)
    workspace.inputs.mkdir(parents=True)
    (workspace.inputs / "long.flac").write_bytes(two_hour_flac())
    report = Report()
    with python_peak() as peak:
        result = dataset.convert_audio(workspace, {}, report)
    assert result["files"] == 1 and result["seconds"] == 60.0, result
    assert result["trimmed"] == [
        {"file": "long.flac", "reason": "only its first 1 minutes are used: split longer recordings"}
    ]
    assert sf.info(workspace.work / "converted" / "long.wav").frames == 60 * 22050
    assert peak[0] < 40 * MB, f"{peak[0] / MB:.0f} MB"  # two hours at 22050 Hz: 630 MB of float32


# ---- dataset zips: /api/v1/training/{id}/dataset/import ----------------------------------------------
def import_zip(client: TestClient, task_id: str, data: bytes, name: str = "dataset.zip") -> httpx.Response:
    return client.post(
        f"/api/v1/training/{task_id}/dataset/import", files={"file": (name, data, "application/zip")}
    )


def one_clip(seconds: float = 1.0) -> bytes:
    return wav(tone(seconds, 22050), 22050)  # kept byte for byte: 16-bit mono at the training rate


def damaged_zip() -> bytes:
    data = bytearray(
        zip_of({"metadata.csv": b"one.wav|Hello.\n", "wavs/one.wav": one_clip()}, zipfile.ZIP_DEFLATED)
    )
    data[data.index(b"wavs/one.wav") + len("wavs/one.wav") + 20] ^= 0xFF  # inside its deflated data
    return bytes(data)


def long_clip() -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(130 * 8000, np.float32), 8000, format="FLAC")
    return buffer.getvalue()


REFUSED_ZIPS = {  # case -> (contents, status, code, what the message says)
    "zero bytes": (lambda: b"", 422, "bad_dataset", "not a readable zip"),
    "text named .zip": (
        lambda: b"metadata.csv|not a zip\n",
        422,
        "bad_dataset",
        "upload a .zip of metadata.csv",
    ),
    "empty zip": (lambda: zip_of({}), 422, "bad_dataset", "no metadata.csv"),
    "entry ../../evil.wav": (
        lambda: zip_of({"metadata.csv": b"evil.wav|Hi.\n", "../../evil.wav": b"RIFF"}),
        422,
        "bad_dataset",
        "unsafe entry '../../evil.wav'",
    ),
    "absolute entry /etc/x": (
        lambda: zip_of({"metadata.csv": b"x|Hi.\n", "/etc/x": b"RIFF"}),
        422,
        "bad_dataset",
        "unsafe entry '/etc/x'",
    ),
    "backslash entry ..\\..\\evil.wav": (
        lambda: zip_of({"metadata.csv": b"evil.wav|Hi.\n", "..\\..\\evil.wav": b"RIFF"}),
        422,
        "bad_dataset",
        "unsafe entry",
    ),
    "symlink entry": (zip_with_symlink, 422, "bad_dataset", "unsafe entry 'wavs/one.wav'"),
    "metadata row ../../etc/passwd": (
        lambda: zip_of({"metadata.csv": b"../../etc/passwd|Hi.\n", "wavs/one.wav": one_clip()}),
        422,
        "bad_dataset",
        "audio missing for 1 rows of metadata.csv: ../../etc/passwd",
    ),
    "damaged member (bad deflate data)": (damaged_zip, 422, "bad_dataset", "cannot be unpacked"),
    "text named wavs/one.wav": (
        lambda: zip_of({"metadata.csv": b"one.wav|Hi.\n", "wavs/one.wav": b"not audio at all\n" * 10}),
        422,
        "bad_dataset",
        "could not decode",
    ),
    "a 130 s clip": (
        lambda: zip_of({"metadata.csv": b"long.flac|Hi.\n", "wavs/long.flac": long_clip()}),
        422,
        "clip_too_long",
        "longer than 120 s",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED_ZIPS))
def test_a_hostile_dataset_zip_is_refused_and_nothing_is_kept(
    studio_client: TestClient, unchanged: Callable[..., None], case: str
) -> None:
    make, status, code, says = REFUSED_ZIPS[case]
    task_id = create_training_task(studio_client)
    refused(studio_client, import_zip(studio_client, task_id, make()), status, code, says)
    unchanged(task_id)
    assert studio_client.get(f"/api/v1/task/{task_id}").json()["files"] == []


def test_a_zip_bomb_is_refused_from_its_directory_without_unpacking_it(
    studio_client: TestClient, unchanged: Callable[..., None]
) -> None:
    task_id = create_training_task(studio_client)
    bomb = zip_bomb(1024)  # 1 GB of zeros behind a metadata.csv that asks for it
    assert len(bomb) < 2 * MB
    started = time.monotonic()
    with python_peak() as peak:
        response = import_zip(studio_client, task_id, bomb)
    refused(studio_client, response, 413, "zip_bomb", "unpacks to 1024 MB from 1.0 MB", "zip bomb")
    # Unpacking would take 1 GB; the upload is read a megabyte at a time up to the 50 MB limit.
    assert peak[0] < 100 * MB and time.monotonic() - started < 5, (peak[0] / MB, time.monotonic() - started)
    unchanged(task_id)


def test_a_member_over_the_size_limit_is_refused_before_it_is_read(
    studio_client: TestClient, unchanged: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset, "MAX_MEMBER_BYTES", MB)  # 100 MB in service: the same check
    task_id = create_training_task(studio_client)
    noise = np.random.default_rng(0).integers(0, 256, 2 * MB, dtype=np.uint8).tobytes()
    data = zip_of({"metadata.csv": b"big.wav|Hi.\n", "wavs/big.wav": noise})
    message = refused(
        studio_client, import_zip(studio_client, task_id, data), 413, "too_large", "at most 1 MB"
    )
    assert "'wavs/big.wav' in the zip unpacks to 2 MB" in message
    unchanged(task_id)


def test_a_refused_import_leaves_the_dataset_as_it_was(studio_client: TestClient) -> None:
    task_id = create_training_task(studio_client)
    good = zip_of({"metadata.csv": b"one.wav|Hello there.\n", "wavs/one.wav": one_clip()})
    assert import_zip(studio_client, task_id, good).status_code == 200
    clips = studio_client.get(f"/api/v1/training/{task_id}/clips").json()["clips"]
    folder = studio_of(studio_client).store.folder(task_id)
    before = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    bad = zip_of(
        {
            "metadata.csv": b"two.wav|A new first line.\nthree.wav|A broken one.\n",
            "wavs/two.wav": one_clip(2.0),
            "wavs/three.wav": b"not audio at all\n" * 10,
        }
    )
    refused(studio_client, import_zip(studio_client, task_id, bad), 422, "bad_dataset", "three.wav")
    assert studio_client.get(f"/api/v1/training/{task_id}/clips").json()["clips"] == clips
    after = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before  # the old clip is still there, nothing half-imported beside it


# ---- portraits: /api/v1/video ----------------------------------------------------------------------------
def post_video(
    client: TestClient, replace: dict[str, tuple[str, bytes, str]], script: str = SCRIPT
) -> httpx.Response:
    left, right = portraits()
    files = {
        "image_left": ("left.png", png(left), "image/png"),
        "image_right": ("right.png", png(right), "image/png"),
    }
    if "image" in replace:
        files = {}
    voices = json.dumps(VOICES) if script == SCRIPT else "{}"
    return client.post("/api/v1/video", data={"script": script, "voices": voices}, files=files | replace)


def black_png(width: int, height: int) -> bytes:
    return image_bytes(Image.new("L", (width, height)), "PNG")


REFUSED_IMAGES = {  # case -> (field, file name, contents, status, code, what the message says)
    "zero bytes": ("image_left", "left.png", lambda: b"", 422, "empty_image", "image_left is empty"),
    "zero bytes as the one image": ("image", "both.png", lambda: b"", 422, "empty_image", "image is empty"),
    "text named .png": (
        "image_left",
        "left.png",
        lambda: b"this is not a picture\n" * 10,
        415,
        "unsupported_image",
        "upload a JPEG, PNG, WebP or BMP photo",
    ),
    "JPEG cut in half": (
        "image_right",
        "right.jpg",
        lambda: (lambda d: d[: len(d) // 2])(image_bytes(Image.fromarray(portraits()[1]), "JPEG")),
        415,
        "corrupt_image",
        "image_right could not be decoded",
    ),
    "PNG header claiming 50000x50000": (
        "image_left",
        "left.png",
        lambda: png_claiming(50000, 50000),
        413,
        "image_too_large",
        "40 megapixel",
    ),
    "48-megapixel black PNG (47 KB)": (
        "image_left",
        "left.png",
        lambda: black_png(8000, 6000),
        413,
        "image_too_large",
        "8000x6000 pixels; the limit is 40 megapixels",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED_IMAGES))
def test_a_hostile_portrait_is_refused_and_nothing_is_kept(
    studio_client: TestClient, unchanged: Callable[..., None], case: str
) -> None:
    field, name, make, status, code, says = REFUSED_IMAGES[case]
    response = post_video(studio_client, {field: (name, make(), "application/octet-stream")})
    refused(studio_client, response, status, code, says)
    unchanged()


def sixteen_bit_png() -> bytes:
    grey = np.asarray(Image.fromarray(portraits()[0]).convert("L")).astype(np.uint16) * 257
    return image_bytes(Image.fromarray(grey), "PNG")


HANDLED_IMAGES = {  # case -> (contents, what the decoded portrait must be close to)
    "CMYK JPEG": (
        lambda: image_bytes(Image.fromarray(portraits()[0]).convert("CMYK"), "JPEG", quality=95),
        lambda: portraits()[0],
    ),
    "16-bit grey PNG": (
        sixteen_bit_png,
        lambda: np.asarray(Image.fromarray(portraits()[0]).convert("L").convert("RGB")),
    ),
    "EXIF-rotated JPEG": (sideways_jpeg, lambda: portraits()[0]),
}


@pytest.mark.parametrize("case", list(HANDLED_IMAGES))
def test_an_odd_but_real_portrait_is_converted_and_its_face_found(
    studio_client: TestClient, unchanged: Callable[..., None], case: str
) -> None:
    make, upright = HANDLED_IMAGES[case]
    data = make()
    portrait = load_portrait(data, "image_left")
    expected = upright()
    assert portrait.pixels.shape == expected.shape and portrait.pixels.dtype == np.uint8
    assert np.abs(portrait.pixels.astype(int) - expected).mean() < 6  # the picture, upright, its colours kept
    # Through the route: the portrait passes decoding and face detection, so the request is refused
    # only for its script (three speakers), which is checked after the faces; nothing is kept.
    response = post_video(studio_client, {"image_left": ("left.img", data, "image/jpeg")}, THREE_SPEAKERS)
    refused(studio_client, response, 422, "too_many_speakers", "two people")
    unchanged()


def test_a_sideways_portrait_without_its_exif_tag_has_no_face_and_nothing_is_kept(
    studio_client: TestClient, unchanged: Callable[..., None]
) -> None:
    """The control for the EXIF case (the tag is what turns it upright), and a refusal that comes after
    the images were read: the images are not kept either."""
    turned = image_bytes(Image.fromarray(portraits()[0]).rotate(90, expand=True), "JPEG", quality=95)
    response = post_video(studio_client, {"image_left": ("left.jpg", turned, "image/jpeg")})
    refused(studio_client, response, 422, "no_face", "no face found in image_left")
    unchanged()
