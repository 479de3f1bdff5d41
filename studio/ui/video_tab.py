"""The "Video" tab: two portraits + a script -> a "video" task with progress, cancel and the result.

Each portrait is uploaded into a box editor (gradio_image_annotation): its face is found at once
and drawn as a box the user can drag, resize or redraw when the detector missed or chose wrong; the
same box is shown as numbers for exact edits. A preview shows the composed frame at the chosen
resolution with the face, mouth and eyes outlined, so a wrong box is seen before anything is
generated. Generate runs the same "video" task as POST /api/v1/video and plays the MP4 when it is
done, with the dialogue audio and subtitles beside it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio_image_annotation import image_annotator

from studio.core import Studio
from studio.errors import StudioError
from studio.services.dialogue import DEFAULT_VOICES
from studio.services.portrait import Box, FaceLayout, draw_layout, load_portrait, locate_face
from studio.services.script import parse_script
from studio.services.talking_head import ENCODER_PRESETS, RESOLUTIONS, compose_pair
from studio.services.video import PRESET_STEPS, VideoRequest
from studio.tasks.store import TaskStatus
from studio.ui.dialogue_tab import all_voices, summarize, ui_owner

EXAMPLE_SCRIPT = (
    "[S1] Hi! Did you see the new studio is finally open?\n"
    "[S2] I did, and I still cannot believe how quiet the rooms are.\n"
    "[S1] Shall we record the first episode there next week?\n"
    "[S2] Yes, let's do it on Tuesday morning."
)
POLL_SECONDS = 0.5
RESULT_FILES = ("video.mp4", "dialogue.wav", "dialogue.srt", "timing.json")
FACE = "face"
FOUND_NOTES = {  # FaceLayout.found -> what the preview note says
    "detected": "face detected",
    "detected in the given box": "face detected in the box",
    "given": "no face detected in the box: the box is used as drawn",
}
FACE_COLOR = (40, 200, 90)

# The box editor's value: {"image": path, "boxes": [{"xmin", "ymin", "xmax", "ymax", ...}]} or None.
Annotated = dict[str, Any] | None


def portrait_editor(label: str, elem_id: str) -> image_annotator:
    """An upload that shows the portrait with one face box to drag, resize or draw anew."""
    return image_annotator(
        None,
        label=label,
        elem_id=elem_id,
        image_type="filepath",
        sources=["upload"],
        single_box=True,  # drawing a new box replaces the old one: one face per portrait
        label_list=[FACE],
        label_colors=[FACE_COLOR],
        use_default_label=True,
        box_min_size=8,
        height=260,
        show_download_button=False,
        show_share_button=False,
    )


def image_of(value: Annotated) -> str | None:
    return (value or {}).get("image") or None


def box_of(value: Annotated, what: str) -> Box | None:
    """The face box drawn on a portrait, in the uploaded image's pixels; none drawn: None (detect)."""
    boxes = (value or {}).get("boxes") or []
    if not boxes:
        return None
    drawn = boxes[-1]
    return Box.parse([drawn["xmin"], drawn["ymin"], drawn["xmax"], drawn["ymax"]], f"the {what} box")


def with_box(value: Annotated, box: Box | None) -> Annotated:
    """The editor's value showing `box` (or no box) on the same image."""
    if not image_of(value):
        return value
    boxes = []
    if box is not None:
        x0, y0, x1, y1 = box.as_list()
        boxes = [{"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1, "label": FACE, "color": FACE_COLOR}]
    return {"image": image_of(value), "boxes": boxes}


def parse_box(text: str, what: str) -> Box | None:
    """'x0, y0, x1, y1' from a box field; empty: none (detect)."""
    if not text or not text.strip():
        return None
    try:
        numbers = [float(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise StudioError(f"the {what} box must be four numbers: x0, y0, x1, y1 (got '{text}')") from None
    return Box.parse(numbers, f"the {what} box")


def box_text(box: Box | None) -> str:
    return ", ".join(str(v) for v in box.as_list()) if box else ""


def multitalk_note(missing: list[str]) -> str:
    if not missing:
        return "MultiTalk is set up: choose it as the engine for a generated scene (GPU)."
    return (
        f"MultiTalk is not set up ({len(missing)} thing(s) missing, listed below and in the Engines "
        "tab): choosing it renders with the embedded renderer."
    )


def build_video_tab(studio: Studio) -> None:
    voice_choices = all_voices(studio)
    gr.Markdown(
        "Two people talk in turns: the **left** portrait speaks **S1**, the **right** one **S2**. "
        "Use frontal, well-lit portraits. Each face is found and boxed when you upload it: drag or "
        "resize the box, or draw a new one, if the outline in the preview is wrong."
    )
    with gr.Row():
        with gr.Column():
            left = portrait_editor("Left portrait (S1)", "video-left")
            left_box = gr.Textbox(label="Left face box: x0, y0, x1, y1 (pixels)", elem_id="video-left-box")
        with gr.Column():
            right = portrait_editor("Right portrait (S2)", "video-right")
            right_box = gr.Textbox(label="Right face box: x0, y0, x1, y1 (pixels)", elem_id="video-right-box")
        with gr.Column(scale=2):
            preview = gr.Image(
                label="Preview (green: face, red: mouth, blue: eyes)",
                interactive=False,
                elem_id="video-preview",
            )
            faces_note = gr.Markdown(elem_id="video-faces")
    with gr.Row():
        with gr.Column(scale=3):
            script = gr.Textbox(EXAMPLE_SCRIPT, label="Script", lines=6, max_lines=30, elem_id="video-script")
            parsed = gr.Markdown(summarize(parse_script(EXAMPLE_SCRIPT)), elem_id="video-parsed")
            prompt = gr.Textbox(
                label="Scene prompt (MultiTalk)",
                placeholder="Two friends chat in a bright podcast studio, microphones on the table",
                elem_id="video-prompt",
            )
        with gr.Column(scale=2):
            with gr.Row():
                voice_s1 = gr.Dropdown(
                    voice_choices,
                    value=DEFAULT_VOICES["S1"],
                    label="S1 voice (left)",
                    allow_custom_value=True,
                    elem_id="video-voice-s1",
                )
                voice_s2 = gr.Dropdown(
                    voice_choices,
                    value=DEFAULT_VOICES["S2"],
                    label="S2 voice (right)",
                    allow_custom_value=True,
                    elem_id="video-voice-s2",
                )
            with gr.Row():
                engine = gr.Dropdown(
                    ["embedded", "multitalk"], value="embedded", label="Engine", elem_id="video-engine"
                )
                preset = gr.Radio(list(ENCODER_PRESETS), value="fast", label="Preset", elem_id="video-preset")
                resolution = gr.Radio(
                    list(RESOLUTIONS), value="480p", label="Resolution", elem_id="video-resolution"
                )
            missing = studio.video.multitalk_missing()
            gr.Markdown(multitalk_note(missing), elem_id="video-engine-note")
            if missing:
                with gr.Accordion("What MultiTalk still needs", open=False):
                    gr.Markdown("\n".join(f"- {item}" for item in missing))
            with gr.Accordion("MultiTalk settings", open=False):
                steps = gr.Slider(1, 100, value=PRESET_STEPS["fast"], step=1, label="Steps")
                text_guidance = gr.Slider(0, 20, value=5.0, step=0.5, label="Text guidance")
                audio_guidance = gr.Slider(0, 20, value=4.0, step=0.5, label="Audio guidance")
                seed = gr.Number(42, label="Seed", precision=0, minimum=0)
            with gr.Row():
                generate = gr.Button("Generate video", variant="primary", elem_id="video-generate")
                cancel = gr.Button("Cancel", variant="stop", elem_id="video-cancel")
    status = gr.Markdown(elem_id="video-status")
    with gr.Row():
        player = gr.Video(label="Video", interactive=False, elem_id="video-player")
        downloads = gr.File(
            label="Downloads: video, audio, subtitles, timing", file_count="multiple", elem_id="video-files"
        )
    task_id = gr.State("")

    def detect(value: Annotated) -> Annotated:
        """A new portrait: its face boxed, found afresh (an old box belonged to the old picture)."""
        path = image_of(value)
        if not path:
            return value
        try:
            portrait = load_portrait(Path(path).read_bytes(), "the portrait")
            face = locate_face(portrait.pixels, None, "this portrait")
        except StudioError as error:
            gr.Warning(error.message)
            return with_box(value, None)
        return with_box(value, face.face.scaled(1 / portrait.scale))

    def box_numbers(value: Annotated) -> str:
        """The drawn box as numbers (what the box field shows)."""
        try:
            return box_text(box_of(value, "face"))
        except StudioError:
            return ""

    def typed_box(value: Annotated, text: str) -> Annotated:
        """Numbers typed into a box field: the box drawn there."""
        if not image_of(value):
            return value
        try:
            return with_box(value, parse_box(text, "face"))
        except StudioError as error:
            gr.Warning(error.message)
            return value

    def show(left_value: Annotated, right_value: Annotated, size: str) -> tuple[Any, str]:
        """The composed frame with what was found outlined; or, per side, what is wrong."""
        found: list[tuple[np.ndarray, FaceLayout] | None] = []
        notes = []
        for value, side in ((left_value, "left"), (right_value, "right")):
            path = image_of(value)
            if not path:
                found.append(None)
                notes.append(f"{side}: no portrait yet")
                continue
            try:
                portrait = load_portrait(Path(path).read_bytes(), f"the {side} portrait")
                hint = box_of(value, side)
                face = locate_face(
                    portrait.pixels, hint.scaled(portrait.scale) if hint else None, f"the {side} portrait"
                )
            except StudioError as error:
                found.append(None)
                notes.append(f"⚠️ {side}: {error.message}")
                continue
            found.append((portrait.pixels, face))
            notes.append(f"{side}: {FOUND_NOTES[face.found]}")
        if found[0] is None or found[1] is None:
            return None, " · ".join(notes)
        (left_pixels, left_face), (right_pixels, right_face) = found[0], found[1]
        composite = compose_pair(left_pixels, left_face, right_pixels, right_face, RESOLUTIONS[size])
        return draw_layout(composite.frame, list(composite.faces)), " · ".join(notes)

    def on_script(text: str) -> str:
        try:
            return summarize(parse_script(text))
        except StudioError as error:
            return f"⚠️ {error.message}"

    def on_generate(
        left_value: Annotated,
        right_value: Annotated,
        text: str,
        s1: str,
        s2: str,
        scene: str,
        engine_name: str,
        preset_name: str,
        size: str,
        step_count: float,
        text_g: float,
        audio_g: float,
        seed_value: float | None,
        request: gr.Request,
    ) -> Iterator[list[Any]]:
        try:
            hints = {"S1": box_of(left_value, "left"), "S2": box_of(right_value, "right")}
            uploads = {
                name: Path(path).read_bytes()
                for name, path in (
                    ("image_left", image_of(left_value)),
                    ("image_right", image_of(right_value)),
                )
                if path
            }
            present = {s.id for s in parse_script(text).speakers}
            video_request = VideoRequest(
                script=text,
                voices={k: v for k, v in (("S1", s1), ("S2", s2)) if v and k in present},
                prompt=scene,
                resolution=size,
                steps=int(step_count),
                text_guidance=float(text_g),
                audio_guidance=float(audio_g),
                seed=int(seed_value or 0),
                engine=engine_name,
                preset=preset_name,
                bboxes={k: box.as_list() for k, box in hints.items() if box},
            )
            config = studio.video.prepare(video_request, uploads)
            task = studio.runner.submit("video", "video (UI)", config, ui_owner(request))
        except StudioError as error:
            raise gr.Error(error.message) from None
        yield [task.task_id, "Queued…", None, None]
        while True:
            current = studio.store.get(task.task_id)
            assert current is not None
            if current.status.finished:
                break
            eta = f", about {current.eta_seconds:.0f} s left" if current.eta_seconds else ""
            step = current.current_step or "starting"
            yield [task.task_id, f"**{current.progress:.0f}%** · {step}{eta}", None, None]
            time.sleep(POLL_SECONDS)
        if current.status != TaskStatus.COMPLETED:
            reason = f": {current.error_message}" if current.error_message else ""
            yield [task.task_id, f"**{current.status.value}**{reason}", None, None]
            return
        folder = studio.store.folder(task.task_id)
        result = current.result
        note = f"\n\n⚠️ {result['note']}" if result.get("note") else ""
        summary = (
            f"Done: {result['duration']:.1f} s, {result['turns']} turns, {result.get('size', size)} "
            f"({result['engine']}; task `{task.task_id}`){note}"
        )
        yield [
            task.task_id,
            summary,
            str(folder / "video.mp4"),
            [str(folder / name) for name in RESULT_FILES],
        ]

    def on_cancel(current: str) -> str:
        if current:
            studio.runner.cancel(current)
            return "Cancelling…"
        return "Nothing is running."

    sides = [left, right, resolution]
    for editor, box in ((left, left_box), (right, right_box)):
        editor.upload(detect, editor, editor)
        # Every new box (found, dragged, drawn or typed) shows as numbers and in the preview.
        editor.change(box_numbers, editor, box).then(show, sides, [preview, faces_note])
        box.submit(typed_box, [editor, box], editor)
        box.blur(typed_box, [editor, box], editor)
    resolution.change(show, sides, [preview, faces_note])
    preset.change(lambda name: PRESET_STEPS[name], preset, steps)
    script.change(on_script, script, parsed)
    advanced = [steps, text_guidance, audio_guidance, seed]
    generate.click(
        on_generate,
        [
            left,
            right,
            script,
            voice_s1,
            voice_s2,
            prompt,
            engine,
            preset,
            resolution,
            *advanced,
        ],
        [task_id, status, player, downloads],
    )
    cancel.click(on_cancel, task_id, status)
