"""The "Video" tab: two portraits (or one picture of both) + a script -> a "video" task with
progress, cancel and the result.

Each picture is uploaded into a box editor (gradio_image_annotation): its face(s) are found at once
and drawn as boxes the user can drag, resize or redraw when the detector missed or chose wrong; a
portrait's box is shown as numbers too, for exact edits. A preview shows the composed frame at the chosen
resolution with the face, mouth and eyes outlined, so a wrong box is seen before anything is
generated. Generate runs the same "video" task as POST /api/v1/video and plays the MP4 when it is
done, with the dialogue audio and subtitles beside it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from gradio_image_annotation import image_annotator
from PIL import Image

from studio.core import Studio
from studio.errors import StudioError
from studio.services.dialogue import DEFAULT_VOICES
from studio.services.portrait import Box, detect_faces, load_portrait
from studio.services.script import parse_script
from studio.services.talking_head import ENCODER_PRESETS, RESOLUTIONS
from studio.services.video import PRESET_STEPS, VideoRequest
from studio.tasks.store import TaskStatus
from studio.ui.common import all_voices, summarize, ui_owner

EXAMPLE_SCRIPT = (
    "[S1] Hi! Did you see the new studio is finally open?\n"
    "[S2] I did, and I still cannot believe how quiet the rooms are.\n"
    "[S1] Shall we record the first episode there next week?\n"
    "[S2] Yes, let's do it on Tuesday morning."
)
POLL_SECONDS = 0.5
RESULT_FILES = ("video.mp4", "dialogue.wav", "dialogue.srt", "timing.json")
FACE = "face"
TWO_PORTRAITS, ONE_PICTURE = "two portraits", "one picture"
FOUND_NOTES = {  # FaceLayout.found -> what the preview note says
    "detected": "face detected",
    "detected in the given box": "face detected in the box",
    "given": "no face detected in the box: the box is used as drawn",
}
FACE_COLOR = (40, 200, 90)
CLOCKWISE = {1: Image.Transpose.ROTATE_270, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_90}

# The box editor's value: {"image": path, "boxes": [{"xmin", "ymin", "xmax", "ymax", ...}],
# "orientation": clockwise quarter turns the user gave it (the boxes are in the turned picture)} or None.
EditorValue = dict[str, Any] | None


def portrait_editor(label: str, elem_id: str, people: int = 1) -> image_annotator:
    """An upload that shows the picture with its face box(es) to drag, resize or draw anew."""
    return image_annotator(
        None,
        label=label,
        elem_id=elem_id,
        image_type="filepath",
        sources=["upload"],
        single_box=people == 1,  # on a portrait, drawing a new box replaces the old one
        label_list=[FACE],
        label_colors=[FACE_COLOR],
        use_default_label=True,
        box_min_size=8,
        height=260,
        show_download_button=False,
        show_share_button=False,
        show_remove_button=True,
    )


def image_of(value: EditorValue) -> str | None:
    return (value or {}).get("image") or None


def boxes_of(value: EditorValue, what: str) -> list[Box]:
    """The boxes drawn on a picture, left to right, in the uploaded image's pixels."""
    drawn = [
        Box.parse([b["xmin"], b["ymin"], b["xmax"], b["ymax"]], f"the {what} box")
        for b in (value or {}).get("boxes") or []
    ]
    return sorted(drawn, key=lambda box: box.center[0])


def box_of(value: EditorValue, what: str) -> Box | None:
    """A portrait's face box; none drawn: None (the face is detected)."""
    boxes = boxes_of(value, what)
    return boxes[0] if boxes else None


def with_boxes(value: EditorValue, boxes: list[Box]) -> EditorValue:
    """The editor's value showing `boxes` on the same image, turned as it was."""
    if not value or not image_of(value):
        return value
    drawn = []
    for box in boxes:
        x0, y0, x1, y1 = box.as_list()
        drawn.append({"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1, "label": FACE, "color": FACE_COLOR})
    return {"image": image_of(value), "boxes": drawn, "orientation": value.get("orientation") or 0}


def picture_bytes(value: EditorValue) -> bytes:
    """The picture as the user sees it in the editor: turned by the rotate buttons (as a PNG), or
    the file as it is."""
    path = Path(str(image_of(value)))
    turns = int((value or {}).get("orientation") or 0) % 4
    if not turns:
        return path.read_bytes()
    with Image.open(path) as picture:
        turned = picture.transpose(CLOCKWISE[turns])
        buffer = io.BytesIO()
        turned.save(buffer, format="PNG")
    return buffer.getvalue()


def with_found_faces(value: EditorValue, people: int) -> EditorValue:
    """A newly uploaded picture with the faces found on it boxed (up to `people`, left to right; old
    boxes belonged to the old picture), and a warning saying what to do where some are missing."""
    if not image_of(value):
        return value
    try:
        picture = load_portrait(picture_bytes(value), "the picture")
    except StudioError as error:
        gr.Warning(error.message)
        return with_boxes(value, [])
    faces = sorted(detect_faces(picture.pixels)[:people], key=lambda box: box.center[0])
    if len(faces) < people:
        wanted = "the face" if people == 1 else "each person's face (the left box speaks S1)"
        gr.Warning(
            f"found {len(faces)} of {people} face(s): drag a box around {wanted} on the picture; "
            "frontal, well-lit faces are found best"
        )
    return with_boxes(value, [face.scaled(1 / picture.scale) for face in faces])


def chosen_pictures(
    mode: str, left: EditorValue, right: EditorValue, both: EditorValue
) -> tuple[dict[str, bytes], tuple[Box | None, Box | None]]:
    """The uploads and face boxes of a video request, from whichever way the pictures were given:
    two portraits (`image_left`, `image_right`) or one picture of both (`image`, the left box S1)."""
    if mode == ONE_PICTURE:
        path = image_of(both)
        if not path:
            raise StudioError("upload the picture of both people")
        boxes = boxes_of(both, "face")
        if len(boxes) not in (0, 2):
            raise StudioError(
                f"{len(boxes)} box(es) drawn on the picture: draw one box per person, two in all "
                "(the left box speaks S1); select a box and press its remove button to take it away"
            )
        return {"image": picture_bytes(both)}, (boxes[0], boxes[1]) if boxes else (None, None)
    missing = [side for side, value in (("left", left), ("right", right)) if not image_of(value)]
    if missing:
        raise StudioError(f"upload the {' and the '.join(missing)} portrait")
    uploads = {"image_left": picture_bytes(left), "image_right": picture_bytes(right)}
    return uploads, (box_of(left, "left"), box_of(right, "right"))


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
        "Two people talk in turns: the person on the **left** speaks **S1**, the one on the **right** "
        "**S2**. Use frontal, well-lit pictures. Each face is found and boxed when you upload: drag or "
        "resize a box, or draw a new one, if the outline in the preview is wrong."
    )
    mode = gr.State(TWO_PORTRAITS)
    with gr.Row():
        with gr.Column(scale=2), gr.Tabs():
            with gr.Tab("Two portraits", elem_id="video-two-portraits") as two_tab, gr.Row():
                with gr.Column():
                    left = portrait_editor("Left portrait (S1)", "video-left")
                    left_box = gr.Textbox(
                        label="Left face box: x0, y0, x1, y1 (pixels)", elem_id="video-left-box"
                    )
                with gr.Column():
                    right = portrait_editor("Right portrait (S2)", "video-right")
                    right_box = gr.Textbox(
                        label="Right face box: x0, y0, x1, y1 (pixels)", elem_id="video-right-box"
                    )
            with gr.Tab("One picture of both", elem_id="video-one-picture") as one_tab:
                both = portrait_editor("Both people (left speaks S1)", "video-both", people=2)
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

    def box_numbers(value: EditorValue) -> str:
        """The drawn box as numbers (what the box field shows)."""
        try:
            return box_text(box_of(value, "face"))
        except StudioError:
            return ""

    def typed_box(value: EditorValue, text: str) -> Any:
        """Numbers typed into a box field: the box drawn there (nothing sent back when they are the
        box already drawn, so leaving the field never undoes a drag made meanwhile)."""
        if not image_of(value):
            return gr.skip()
        try:
            box = parse_box(text, "face")
            if box == box_of(value, "face"):
                return gr.skip()
            return with_boxes(value, [box] if box else [])
        except StudioError as error:
            gr.Warning(error.message)
            return gr.skip()

    def show(
        chosen: str, left_value: EditorValue, right_value: EditorValue, both_value: EditorValue, size: str
    ) -> tuple[Any, str]:
        """The video's frame as it will be composed, with what was found outlined; or what is wrong."""
        try:
            uploads, hints = chosen_pictures(chosen, left_value, right_value, both_value)
            frame, faces = studio.video.preview(uploads, hints, size)
        except StudioError as error:
            return None, f"⚠️ {error.message}"
        return frame, " · ".join(
            f"{person} ({side}): {FOUND_NOTES[face.found]}"
            for person, side, face in zip(("S1", "S2"), ("left", "right"), faces, strict=True)
        )

    def on_script(text: str) -> str:
        try:
            return summarize(parse_script(text))
        except StudioError as error:
            return f"⚠️ {error.message}"

    def on_generate(
        chosen: str,
        left_value: EditorValue,
        right_value: EditorValue,
        both_value: EditorValue,
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
    ) -> list[Any]:
        """Submit the "video" task (what follows it is `follow`)."""
        try:
            uploads, hints = chosen_pictures(chosen, left_value, right_value, both_value)
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
                bboxes={p: box.as_list() for p, box in zip(("S1", "S2"), hints, strict=True) if box},
            )
            config = studio.video.prepare(video_request, uploads)
            task = studio.runner.submit("video", "video (UI)", config, ui_owner(request))
        except StudioError as error:
            raise gr.Error(error.message) from None
        return [task.task_id, "Queued…", None, None]

    def follow(current_id: str) -> Iterator[list[Any]]:
        """The task's progress until it ends, then the video and the downloads."""
        while True:
            current = studio.store.get(current_id)
            assert current is not None
            if current.status.finished:
                break
            eta = f", about {current.eta_seconds:.0f} s left" if current.eta_seconds else ""
            step = current.current_step or "starting"
            yield [f"**{current.progress:.0f}%** · {step}{eta}", None, None]
            time.sleep(POLL_SECONDS)
        if current.status != TaskStatus.COMPLETED:
            reason = f": {current.error_message}" if current.error_message else ""
            yield [f"**{current.status.value}**{reason}", None, None]
            return
        folder = studio.store.folder(current_id)
        result = current.result
        note = f"\n\n⚠️ {result['note']}" if result.get("note") else ""
        summary = (
            f"Done: {result['duration']:.1f} s, {result['turns']} turns, {result.get('size', '')} "
            f"({result['engine']}; task `{current_id}`){note}"
        )
        yield [summary, str(folder / "video.mp4"), [str(folder / name) for name in RESULT_FILES]]

    def on_cancel(current: str) -> str:
        if current:
            studio.runner.cancel(current)
            return "Cancelling…"
        return "Nothing is running."

    pictures = [mode, left, right, both, resolution]
    # Every event that reads a picture editor runs alone: reading one re-saves its picture under the
    # same cache path (gradio_image_annotation's preprocessing), and two at once could read a
    # half-written file. They are short; the video itself is followed outside the group.
    alone: dict[str, Any] = {"concurrency_id": "video-pictures", "concurrency_limit": 1}
    for editor, box in ((left, left_box), (right, right_box)):
        editor.upload(lambda value: with_found_faces(value, 1), editor, editor, **alone)
        # Every new box (found, dragged, drawn or typed) shows as numbers and in the preview, in one
        # event; "always_last": an edit made while the last one is being shown runs after it
        # (gradio's default drops it, and the preview would keep showing the older box).
        editor.change(
            lambda value, *shown: (box_numbers(value), *show(*shown)),
            [editor, *pictures],
            [box, preview, faces_note],
            trigger_mode="always_last",
            **alone,
        )
        box.submit(typed_box, [editor, box], editor, trigger_mode="always_last", **alone)
        box.blur(typed_box, [editor, box], editor, trigger_mode="always_last", **alone)
    both.upload(lambda value: with_found_faces(value, 2), both, both, **alone)
    both.change(show, pictures, [preview, faces_note], trigger_mode="always_last", **alone)
    for tab, chosen in ((two_tab, TWO_PORTRAITS), (one_tab, ONE_PICTURE)):
        tab.select(lambda chosen=chosen: chosen, None, mode).then(
            show, pictures, [preview, faces_note], **alone
        )
    resolution.change(show, pictures, [preview, faces_note], trigger_mode="always_last", **alone)
    preset.change(lambda name: PRESET_STEPS[name], preset, steps)
    script.change(on_script, script, parsed)
    advanced = [steps, text_guidance, audio_guidance, seed]
    generate.click(
        on_generate,
        [
            mode,
            left,
            right,
            both,
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
        **alone,
    ).success(follow, task_id, [status, player, downloads])
    cancel.click(on_cancel, task_id, status)
