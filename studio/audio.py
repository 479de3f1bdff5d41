"""Audio in and out: encoding to the formats clients ask for, decoding anything users upload.

Encoding uses libsndfile (soundfile) where it can and the ffmpeg bundled by imageio-ffmpeg for the
rest (AAC); decoding always goes through that ffmpeg, so MP3/M4A uploads work without a system
ffmpeg or ffprobe.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import soundfile as sf
import soxr

# format -> (media type, soundfile format, soundfile subtype); None: encoded by ffmpeg
FORMATS: dict[str, tuple[str, str | None, str | None]] = {
    "wav": ("audio/wav", "WAV", "PCM_16"),
    "flac": ("audio/flac", "FLAC", "PCM_16"),
    "mp3": ("audio/mpeg", "MP3", "MPEG_LAYER_III"),
    "ogg": ("audio/ogg", "OGG", "VORBIS"),
    "opus": ("audio/ogg", "OGG", "OPUS"),
    "aac": ("audio/aac", None, None),
    "pcm": ("audio/pcm", "RAW", "PCM_16"),
}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


class AudioError(ValueError):
    """Audio that cannot be decoded or encoded; the message says what to fix."""


def media_type(fmt: str) -> str:
    return FORMATS[fmt][0]


def limit_peak(audio: np.ndarray, ceiling: float = 0.98) -> np.ndarray:
    """Scale down (never up) so no sample exceeds `ceiling`: Kokoro can overshoot 1.0."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio * (ceiling / peak) if peak > ceiling else audio


def fade_edges(audio: np.ndarray, sample_rate: int, seconds: float = 0.008) -> np.ndarray:
    """`audio` with its first and last `seconds` faded in and out, so pieces join without a click."""
    n = min(int(seconds * sample_rate), len(audio) // 2)
    if n < 2:
        return audio
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    out = np.array(audio, dtype=np.float32)
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return audio
    return soxr.resample(audio, rate_in, rate_out).astype(np.float32)


def encode(audio: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Mono float32 audio -> bytes of `fmt` (one of FORMATS)."""
    if fmt not in FORMATS:
        raise AudioError(f"unsupported format '{fmt}'; use one of {', '.join(FORMATS)}")
    audio = limit_peak(np.asarray(audio, dtype=np.float32))
    _, container, subtype = FORMATS[fmt]
    if container is None:
        return _ffmpeg_encode(audio, sample_rate, fmt)
    if fmt == "opus" and sample_rate not in _OPUS_RATES:
        audio, sample_rate = resample(audio, sample_rate, 48000), 48000
    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def wav_stream_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header with unknown length, for streaming PCM after it."""
    unknown = 0xFFFFFFFF
    return (
        b"RIFF"
        + unknown.to_bytes(4, "little")
        + b"WAVEfmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")
        + (1).to_bytes(2, "little")
        + sample_rate.to_bytes(4, "little")
        + (sample_rate * 2).to_bytes(4, "little")
        + (2).to_bytes(2, "little")
        + (16).to_bytes(2, "little")
        + b"data"
        + unknown.to_bytes(4, "little")
    )


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(limit_peak(audio), -1.0, 1.0) * 32767).astype("<i2").tobytes()


def decode(
    source: bytes | Path, sample_rate: int | None = None, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """Any audio (or video) file -> mono float32 at `sample_rate` (the file's own rate when None).

    Only the first audio stream is read; channels are averaged (never louder than the loudest
    channel). With `max_seconds`, ffmpeg stops there: a long file is never decoded whole into memory.
    """
    data = _read_source(source)
    rate = sample_rate or _probe_rate(data)
    cmd = [*_decode_command(rate, max_seconds), "-f", "f32le", "pipe:1"]
    result = subprocess.run(cmd, input=data, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise AudioError(_decode_failure(result))
    return np.frombuffer(result.stdout, dtype=np.float32).copy(), rate


def decode_to_file(
    source: bytes | Path, target: Path, sample_rate: int, max_seconds: float | None = None
) -> int:
    """Like `decode`, but ffmpeg writes a mono 32-bit float WAV straight to `target`, so a long
    recording never sits whole in memory; returns its length in samples. Nothing is left at
    `target` when the file cannot be decoded."""
    data = _read_source(source)
    cmd = [*_decode_command(sample_rate, max_seconds), "-c:a", "pcm_f32le", "-f", "wav", "-y"]
    result = subprocess.run([*cmd, f"file:{target}"], input=data, capture_output=True, check=False)
    frames = sf.info(str(target)).frames if result.returncode == 0 and target.exists() else 0
    if not frames:
        target.unlink(missing_ok=True)
        raise AudioError(_decode_failure(result))
    return frames


def _read_source(source: bytes | Path) -> bytes:
    data = source.read_bytes() if isinstance(source, Path) else source
    if not data:
        raise AudioError("the audio file is empty (0 bytes): upload the recording again")
    return data


def _decode_command(rate: int, max_seconds: float | None) -> list[str]:
    """ffmpeg reading stdin -> its first audio stream, mono at `rate` (up to `max_seconds`).

    rematrix_maxval=1 makes the downmix an average: ffmpeg's default mix adds channels up (an
    8-channel file would come out at 4x the level of each channel).
    """
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", "pipe:0", "-map", "0:a:0"]
    cmd += ["-ac", "1", "-ar", str(rate), "-rematrix_maxval", "1.0"]
    return cmd + (["-t", f"{max_seconds:.3f}"] if max_seconds is not None else [])


def _decode_failure(result: subprocess.CompletedProcess[bytes]) -> str:
    """What ffmpeg's complaint means for the person who uploaded the file."""
    lines = result.stderr.decode(errors="replace").strip().splitlines()
    text = "\n".join(lines)
    if result.returncode == 0:
        reason = "the file holds no audio samples"
    elif "matches no streams" in text:
        reason = "the file holds no sound (is it a picture, a document or a silent video?)"
    elif "Invalid data found when processing input" in text or not lines:
        reason = "it is not a recording in a format we read, or it is damaged"
    else:
        reason = lines[-1][:200]
    return f"could not decode the audio: {reason}; upload a wav, mp3, flac, m4a or ogg recording"


def _probe_rate(data: bytes) -> int:
    """The first audio stream's sample rate, read from ffmpeg's stream description."""
    result = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", "pipe:0"],
        input=data,
        capture_output=True,
        check=False,
    )
    for line in result.stderr.decode(errors="replace").splitlines():
        if "Audio:" in line and " Hz" in line:
            return int(line.split(" Hz")[0].split()[-1])
    raise AudioError("no audio stream found in the file")


def _ffmpeg_encode(audio: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    codec = {"aac": ["-c:a", "aac", "-b:a", "128k", "-f", "adts"]}[fmt]
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "f32le", "-ar", str(sample_rate), "-ac", "1"]
    result = subprocess.run(
        [*cmd, "-i", "pipe:0", *codec, "pipe:1"],
        input=audio.astype("<f4").tobytes(),
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise AudioError(f"ffmpeg could not encode {fmt}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def change_pitch(audio: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """Shift pitch by `factor` (1.0 = unchanged, 2.0 = an octave up) keeping duration."""
    if abs(factor - 1.0) < 1e-3:
        return audio
    import librosa

    steps = 12.0 * float(np.log2(factor))
    return librosa.effects.pitch_shift(audio, sr=sample_rate, n_steps=steps).astype(np.float32)
