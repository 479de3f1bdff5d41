"""JSONL batch dialogue, MOSS-TTSD style, without a server.

    python -m studio.batch --jsonl data.jsonl --output_dir out [--max_samples N] [--use_normalize]

Each line is a JSON object with `text` (a script), optionally `language` (auto when absent: each
sentence in its own language, so Chinese lines need no field) and, per speaker N, `voice_speakerN`
(a studio voice id), or `prompt_audio_speakerN` + `prompt_text_speakerN` (a reference clip, path
relative to the JSONL file, and its words): with those, a dialogue engine that can run here (MOSS-TTSD
with its weights) speaks the whole script in one pass, cloning each prompted speaker from its clip;
`voices` ({"S1": id, ...}) works too.
Each line's results go to `<output_dir>/line_NNNN/` (dialogue audio, .srt, .vtt, timing, stems).
A line that fails is reported with its reason and the others go on; `summary.json` lists both.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from engines.text import LANGUAGE_SPELLINGS
from studio.errors import BadInput, StudioError
from studio.services.dialogue import DialogueConfig, DialogueService

SPEAKER_KEYS = range(1, 6)


@dataclass
class LineResult:
    line: int
    ok: bool
    output: str = ""
    duration: float = 0.0
    error: str = ""


def request_for(
    item: dict[str, Any], base: Path, normalize: bool, fmt: str, one_pass: str | None = None
) -> DialogueConfig:
    """The dialogue request of one JSONL object; raises ValueError naming what is wrong. With prompt
    clips and `one_pass` (a dialogue engine that can run here), that engine speaks the script."""
    if not isinstance(item, dict):
        raise ValueError("a line must be a JSON object with a 'text' field")
    text = item.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("'text' is missing or empty")
    voices_given = item.get("voices") or {}
    if not isinstance(voices_given, dict):
        raise ValueError("'voices' must be an object: {\"S1\": voice id, ...}")
    voices = {str(k): str(v) for k, v in voices_given.items()}
    prompted = False
    for n in SPEAKER_KEYS:
        if f"voice_speaker{n}" in item:
            voices[f"S{n}"] = str(item[f"voice_speaker{n}"])
        prompt = item.get(f"prompt_audio_speaker{n}")
        if prompt:
            path = base / str(prompt)
            if not _is_file(path):
                raise ValueError(f"prompt_audio_speaker{n}: file not found: {path}")
            prompted = True
            if one_pass is None and f"S{n}" not in voices:
                raise ValueError(
                    f"prompt_audio_speaker{n}: cloning from a reference clip needs a cloning engine "
                    "(MOSS-TTSD with its weights, see weights/README.md); none is available here. "
                    f"Give a studio voice instead with voice_speaker{n}"
                )
    language = item.get("language")
    if language is not None and (not isinstance(language, str) or language.lower() not in LANGUAGE_SPELLINGS):
        raise ValueError(f"'language' must be one of {', '.join(LANGUAGE_SPELLINGS)} (auto: per sentence)")
    config = {"script": text, "voices": voices, "format": fmt, "normalize": normalize}
    if prompted and one_pass:
        config["engine"] = one_pass
    try:
        return DialogueConfig.parse(config | ({"language": language.lower()} if language else {}), "line")
    except BadInput as error:
        raise ValueError(error.message) from None


def references_for(item: dict[str, Any], base: Path) -> dict[str, tuple[Path, str]]:
    """Speaker id -> (prompt clip, its transcript), from `prompt_audio_speakerN` + `prompt_text_speakerN`."""
    references = {}
    for n in SPEAKER_KEYS:
        prompt = item.get(f"prompt_audio_speaker{n}")
        if prompt:
            transcript = " ".join(str(item.get(f"prompt_text_speaker{n}") or "").split())
            if not transcript:
                raise ValueError(
                    f"prompt_text_speaker{n}: the words of prompt_audio_speaker{n} are needed to clone it"
                )
            references[f"S{n}"] = (base / str(prompt), transcript)
    return references


def _is_file(path: Path) -> bool:
    try:
        return path.resolve().is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte: no such file either
        return False


def run_batch(
    dialogue: DialogueService,
    jsonl: Path,
    output_dir: Path,
    max_samples: int | None = None,
    normalize: bool = False,
    fmt: str = "wav",
) -> list[LineResult]:
    output_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        (n, raw) for n, raw in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), 1) if raw.strip()
    ]
    if max_samples is not None:
        lines = lines[:max_samples]
    results = []
    one_pass = dialogue.one_pass_engine()  # prompt clips go to it (MOSS-TTSD), as its own inference does
    for number, raw in tqdm(lines, desc="dialogues", unit="line"):
        folder = output_dir / f"line_{number:04d}"
        try:
            item = json.loads(raw)
            request = request_for(item, jsonl.parent, normalize, fmt, one_pass)
            references = references_for(item, jsonl.parent) if request.engine else {}
            _, planned = dialogue.plan(request)
            result = dialogue.render(planned, request, folder, references=references)
            results.append(LineResult(number, True, str(folder / result["audio"]), result["duration"]))
        except json.JSONDecodeError as error:
            results.append(LineResult(number, False, error=f"not valid JSON: {error}"))
        except (StudioError, ValueError) as error:
            results.append(LineResult(number, False, error=getattr(error, "message", str(error))))
        except Exception as error:  # one broken line must not stop the batch
            results.append(LineResult(number, False, error=f"{type(error).__name__}: {error}"))
    summary = {
        "succeeded": sum(r.ok for r in results),
        "failed": sum(not r.ok for r in results),
        "lines": [r.__dict__ for r in results],
    }
    (output_dir / "summary.json").write_text(
        json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jsonl", type=Path, required=True, help="input JSONL, one dialogue per line")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--max_samples", type=int, default=None, help="only the first N lines")
    parser.add_argument("--use_normalize", action="store_true", help="spell out numbers and abbreviations")
    parser.add_argument("--format", choices=("wav", "mp3", "flac"), default="wav")
    args = parser.parse_args(argv)
    if not args.jsonl.is_file():
        parser.error(f"--jsonl {args.jsonl} does not exist")

    from studio.config import Settings
    from studio.core import Studio

    studio = Studio(Settings())
    results = run_batch(
        studio.dialogue, args.jsonl, args.output_dir, args.max_samples, args.use_normalize, args.format
    )
    failed = [r for r in results if not r.ok]
    print(
        f"{len(results) - len(failed)} succeeded, {len(failed)} failed; summary: {args.output_dir / 'summary.json'}"
    )
    for r in failed:
        print(f"  line {r.line}: {r.error}")
    return 1 if failed and len(failed) == len(results) else 0


if __name__ == "__main__":
    sys.exit(main())
