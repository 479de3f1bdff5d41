"""What the "Video" tab does when something happens on it (its layout is studio/ui/video_tab.py).

The picture editors' values (a picture and the face boxes drawn on it) become the uploads and face
hints of a video request; `VideoHandlers` holds the studio and has one method per event: a picture
uploaded (its faces found and boxed), a box drawn or typed, the preview, the script's summary, and
the "video" task submitted, followed and cancelled.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from studio.core import Studio
from studio.errors import StudioError
from studio.services.portrait import Box, detect_faces, load_portrait
from studio.services.script import parse_script
from studio.services.video import PEOPLE, VideoConfig
from studio.ui.common import cancel_task, follow_task, summarize, task_file, task_files, ui_owner

RESULT_FILES = ("video.mp4", "dialogue.wav", "dialogue.srt", "timing.json")
FACE = "face"
TWO_PORTRAITS, ONE_PICTURE = "two portraits", "one picture"
FOUND_NOTES = {  # FaceLayout.found -> what the preview note says
    "detected": "face detected",
    "detected in the given box": "face detected in the box",
    "given": "no face detected in the box: the box is used as drawn",
}
FACE_COLOR = (40, 200, 90)
# A box's colour as the editor's page writes it: a value sent back before the page has drawn the
# box (its tab hidden, a busy machine) must still be one the editor's preprocess can read.
FACE_RGB = "rgb({}, {}, {})".format(*FACE_COLOR)
CLOCKWISE = {1: Image.Transpose.ROTATE_270, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_90}

# The box editor's value: {"image": path, "boxes": [{"xmin", "ymin", "xmax", "ymax", ...}],
# "orientation": clockwise quarter turns the user gave it (the boxes are in the turned picture)} or None.
EditorValue = dict[str, Any] | None


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
        drawn.append({"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1, "label": FACE, "color": FACE_RGB})
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


class VideoHandlers:
    """The Video tab's events, each a method; `studio` serves them."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    def found_faces(self, value: EditorValue, people: int) -> EditorValue:
        """A newly uploaded picture with the faces found on it boxed (up to `people`, left to right;
        old boxes belonged to the old picture), and a warning saying what to do where some are missing."""
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

    def box_numbers(self, value: EditorValue) -> str:
        """The drawn box as numbers (what the box field shows)."""
        try:
            return box_text(box_of(value, "face"))
        except StudioError:
            return ""

    def typed_box(self, value: EditorValue, text: str) -> Any:
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
        self,
        chosen: str,
        left_value: EditorValue,
        right_value: EditorValue,
        both_value: EditorValue,
        size: str,
    ) -> tuple[Any, str]:
        """The video's frame as it will be composed, with what was found outlined; or what is wrong."""
        try:
            uploads, hints = chosen_pictures(chosen, left_value, right_value, both_value)
            frame, faces = self.studio.video.preview(uploads, hints, size)
        except StudioError as error:
            return None, f"⚠️ {error.message}"
        return frame, " · ".join(
            f"{person} ({side}): {FOUND_NOTES[face.found]}"
            for person, side, face in zip(("S1", "S2"), ("left", "right"), faces, strict=True)
        )

    def box_changed(self, value: EditorValue, *shown: Any) -> tuple[Any, ...]:
        """A portrait's box (found, dragged, drawn or typed): its numbers, and the preview (`show`)."""
        return (self.box_numbers(value), *self.show(*shown))

    def script_changed(self, text: str) -> str:
        try:
            return summarize(parse_script(text))
        except StudioError as error:
            return f"⚠️ {error.message}"

    def generate(
        self,
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
        gpu_count: str,
        request: gr.Request,
    ) -> list[Any]:
        """Submit the "video" task (what follows it is `follow`)."""
        try:
            uploads, hints = chosen_pictures(chosen, left_value, right_value, both_value)
            present = {s.id for s in parse_script(text).speakers}
            config = VideoConfig.parse(
                {
                    "script": text,
                    "voices": {k: v for k, v in zip(PEOPLE, (s1, s2), strict=True) if v and k in present},
                    "prompt": scene,
                    "resolution": size,
                    "steps": int(step_count),
                    "text_guidance": float(text_g),
                    "audio_guidance": float(audio_g),
                    "seed": int(seed_value or 0),
                    "engine": engine_name,
                    "preset": preset_name,
                    "gpus": gpu_count if gpu_count == "auto" else int(gpu_count),
                    "bboxes": {p: box.as_list() for p, box in zip(PEOPLE, hints, strict=True) if box},
                }
            )
            task = self.studio.video.submit(config, uploads, "video (UI)", ui_owner(request))
        except StudioError as error:
            raise gr.Error(error.message) from None
        return [task.task_id, "Queued…", None, None]

    def follow(self, task_id: str) -> Iterator[list[Any]]:
        """The task's progress until it ends, then the video and the downloads."""
        for line, done in follow_task(self.studio, task_id):
            if done is None:
                yield [line, None, None]
                continue
            result = done.result
            note = f"\n\n⚠️ {result['note']}" if result.get("note") else ""
            summary = (
                f"Done: {result['duration']:.1f} s, {result['turns']} turns, {result.get('size', '')} "
                f"({result['engine']}; task `{task_id}`){note}"
            )
            video = task_file(self.studio, task_id, "video.mp4")
            yield [summary, video, task_files(self.studio, task_id, *RESULT_FILES)]

    def cancel(self, task_id: str) -> str:
        return cancel_task(self.studio, task_id)
