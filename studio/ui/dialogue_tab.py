"""The "Dialogue" tab: script -> speaker table -> a dialogue task with progress, cancel and results."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from engines.base import Capability, Engine
from engines.text import detect_language
from studio import audio as audio_io
from studio.core import Studio
from studio.errors import StudioError
from studio.services.dialogue import DEFAULT_PAUSE_MS, DEFAULT_VOICES, DialogueConfig
from studio.services.quality import REPORT_COLUMNS, report_rows
from studio.services.script import parse_script
from studio.services.speech import SpeechRequest
from studio.ui.common import (
    all_voices,
    cancel_task,
    follow_task,
    language_dropdown,
    summarize,
    task_file,
    task_files,
    ui_owner,
)

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "dialogue_examples"
MAX_SPEAKERS = len(DEFAULT_VOICES)
TURN_BY_TURN = "Turn by turn (each voice's engine)"
PREVIEW_LINES = {
    "zh": "你好，我是第{n}位说话人。",
    "ja": "こんにちは、{n}番目の話し手です。",
    "en-us": "Hello, I am speaker {n}.",
    "en-gb": "Hello, I am speaker {n}.",
}


def examples() -> dict[str, str]:
    return {
        p.stem.split("_", 1)[1].replace("_", " "): p.read_text(encoding="utf-8")
        for p in sorted(EXAMPLES_DIR.glob("*.txt"))
    }


def speaker_title(speaker_id: str, label: str) -> str:
    return speaker_id if label == speaker_id else f"{speaker_id} · {label}"


def script_engines(studio: Studio) -> list[Engine]:
    """The dialogue engines (whole script in one pass) that can run here."""
    return studio.registry.available(Capability.DIALOGUE)


def checked_line(quality: dict[str, Any]) -> str:
    """The quality check's summary after the status line."""
    return (
        f"; {quality['checked']} sentences heard back, {quality['retaken']} made again, "
        f"{len(quality['failing'])} still wrong (listen at the times in the table)"
    )


def build_dialogue_tab(studio: Studio) -> None:
    samples = examples()
    first = next(iter(samples.values()), "")
    voice_choices = all_voices(studio)
    initial = {s.id: s.label for s in parse_script(first).speakers} if first else {}

    with gr.Row():
        with gr.Column(scale=3):
            example = gr.Dropdown(list(samples), value=next(iter(samples), None), label="Example scripts")
            script = gr.Textbox(
                first,
                label="Script",
                lines=10,
                max_lines=40,
                info="[S1] text, (s1) text, Speaker 1: text, Name: text; untagged lines alternate S1, S2",
                elem_id="dialogue-script",
            )
            parsed = gr.Markdown(summarize(parse_script(first)) if first else "", elem_id="dialogue-parsed")
        with gr.Column(scale=2):
            rows = []
            for n in range(1, MAX_SPEAKERS + 1):
                sid = f"S{n}"
                with gr.Row(visible=sid in initial) as row:
                    voice = gr.Dropdown(
                        voice_choices,
                        value=DEFAULT_VOICES[sid],
                        label=speaker_title(sid, initial.get(sid, sid)),
                        allow_custom_value=True,
                        scale=3,
                        elem_id=f"dialogue-voice-s{n}",
                    )
                    language = language_dropdown(f"dialogue-language-s{n}", scale=2, min_width=120)
                    preview = gr.Button("▶ Preview", scale=1, size="sm")
                    preview_audio = gr.Audio(type="filepath", show_label=False, scale=2, interactive=False)
                rows.append((row, voice, language, preview, preview_audio))
            with gr.Row():
                pause = gr.Slider(0, 2000, value=DEFAULT_PAUSE_MS, step=50, label="Pause between turns (ms)")
                fmt = gr.Dropdown(["wav", "mp3", "flac"], value="wav", label="Format")
            normalize = gr.Checkbox(False, label="Spell out numbers and abbreviations")
            check = gr.Checkbox(
                False, label="Check every sentence (ASR) and re-take bad ones", elem_id="dialogue-quality"
            )
            engine = gr.Dropdown(
                [(TURN_BY_TURN, "")] + [(e.info.display_name, e.info.name) for e in script_engines(studio)],
                value="",
                label="Engine",
                info="turn by turn with each voice's engine, or a dialogue engine that speaks the whole "
                "script in one pass, cloning each speaker's voice from its reference clip",
                elem_id="dialogue-engine",
            )
            with gr.Row():
                generate = gr.Button("Generate dialogue", variant="primary", elem_id="dialogue-generate")
                cancel = gr.Button("Cancel", variant="stop", elem_id="dialogue-cancel")

    status = gr.Markdown(elem_id="dialogue-status")
    player = gr.Audio(label="Dialogue", type="filepath", interactive=False, elem_id="dialogue-audio")
    with gr.Row():
        subtitles = gr.Textbox(label="Subtitles (SRT)", lines=8, max_lines=20, elem_id="dialogue-srt")
        downloads = gr.File(
            label="Downloads: subtitles, timing, stems", file_count="multiple", elem_id="dialogue-files"
        )
    quality = gr.Dataframe(
        headers=REPORT_COLUMNS,
        label="Quality check: what the ASR heard in each sentence",
        visible=False,
        interactive=False,
        wrap=True,
        elem_id="dialogue-quality-report",
    )
    task_id = gr.State("")

    def on_script(text: str) -> list[Any]:
        try:
            parsed_script = parse_script(text)
        except StudioError as error:
            # Keep the speaker rows as they were while the user is mid-edit.
            return [f"⚠️ {error.message}"] + [gr.skip()] * (2 * MAX_SPEAKERS)
        labels = {s.id: s.label for s in parsed_script.speakers}
        updates: list[Any] = [summarize(parsed_script)]
        for n in range(1, MAX_SPEAKERS + 1):
            sid = f"S{n}"
            updates += [
                gr.Row(visible=sid in labels),
                gr.Dropdown(label=speaker_title(sid, labels.get(sid, sid))),
            ]
        return updates

    def on_preview(voice: str, language: str, text: str, n: int) -> str:
        """A line in the speaker's language: the one chosen, else the one its first turn is written in."""
        if language == "auto":
            try:
                first = next(t.text for t in parse_script(text).turns if t.speaker == f"S{n}")
                language = detect_language(first)
            except (StudioError, StopIteration):
                language = "en-us"
        line = PREVIEW_LINES.get(language, PREVIEW_LINES["en-us"]).format(n=n)
        try:
            speech = studio.speech.synthesize(SpeechRequest(text=line, voice=voice, language=language))
        except StudioError as error:
            raise gr.Error(error.message) from None
        path = studio.settings.data_dir / "ui_outputs" / f"preview-s{n}-{time.time_ns()}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(audio_io.encode(speech.audio, speech.sample_rate, "wav"))
        return str(path)

    def on_generate(  # one voice per speaker row (MAX_SPEAKERS), then one language per row, then who asks
        text: str,
        pause_ms: float,
        out_fmt: str,
        spell: bool,
        checked: bool,
        engine_name: str,
        s1: str,
        s2: str,
        s3: str,
        s4: str,
        s5: str,
        l1: str,
        l2: str,
        l3: str,
        l4: str,
        l5: str,
        request: gr.Request,
    ) -> Iterator[list[Any]]:
        voices, languages = (s1, s2, s3, s4, s5), (l1, l2, l3, l4, l5)
        try:
            present = {s.id for s in parse_script(text).speakers}  # hidden rows hold voices too: drop them
            config = DialogueConfig(
                script=text,
                format=out_fmt,
                pause_ms=int(pause_ms),
                normalize=spell,
                quality_check=checked,
                engine=engine_name or None,
                voices={f"S{n}": v for n, v in enumerate(voices, 1) if v and f"S{n}" in present},
                languages={
                    f"S{n}": lang
                    for n, lang in enumerate(languages, 1)
                    if lang and lang != "auto" and f"S{n}" in present
                },
            )
            task = studio.runner.submit("dialogue", "dialogue (UI)", config, ui_owner(request))
        except StudioError as error:
            raise gr.Error(error.message) from None
        hidden = gr.Dataframe(visible=False)
        yield [task.task_id, "Queued…", None, "", None, hidden]
        for line, done in follow_task(studio, task.task_id):
            if done is None:
                yield [task.task_id, line, None, "", None, hidden]
                continue
            result = done.result
            subtitles = studio.store.file_path(task.task_id, result["subtitles"])
            report = studio.store.file_path(task.task_id, "quality.json")
            yield [
                task.task_id,
                f"Done: {result['duration']:.1f} s, {result['turns']} turns (task `{task.task_id}`)"
                + (checked_line(result["quality"]) if "quality" in result else ""),
                task_file(studio, task.task_id, result["audio"]),
                subtitles.read_text(encoding="utf-8") if subtitles else "",
                [f for f in task_files(studio, task.task_id, "*") if Path(f).name != result["audio"]],
                gr.Dataframe(report_rows(json.loads(report.read_text("utf-8"))), visible=True)
                if report
                else hidden,
            ]

    example.change(lambda name: samples[name], example, script)
    row_outputs = [item for row, voice, _, _, _ in rows for item in (row, voice)]
    script.change(on_script, script, [parsed, *row_outputs])
    for n, (_, voice, language, preview, preview_audio) in enumerate(rows, 1):
        preview.click(
            lambda v, lang, text, n=n: on_preview(v, lang, text, n), [voice, language, script], preview_audio
        )
    voices = [voice for _, voice, _, _, _ in rows]
    languages = [language for _, _, language, _, _ in rows]
    generate.click(
        on_generate,
        [script, pause, fmt, normalize, check, engine, *voices, *languages],
        [task_id, status, player, subtitles, downloads, quality],
    )
    cancel.click(lambda current: cancel_task(studio, current), task_id, status)
