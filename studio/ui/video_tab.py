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

from pathlib import Path
from typing import Any

import gradio as gr
from gradio_image_annotation import image_annotator

from studio.core import Studio
from studio.services.script import parse_script
from studio.services.talking_head import ENCODER_PRESETS, RESOLUTIONS
from studio.services.video import PRESET_STEPS
from studio.ui.common import all_voices, summarize, voice_dropdown
from studio.ui.video_handlers import FACE, FACE_COLOR, ONE_PICTURE, TWO_PORTRAITS, VideoHandlers

EXAMPLE_SCRIPT = (
    "[S1] Hi! Did you see the new studio is finally open?\n"
    "[S2] I did, and I still cannot believe how quiet the rooms are.\n"
    "[S1] Shall we record the first episode there next week?\n"
    "[S2] Yes, let's do it on Tuesday morning."
)


# Public-domain portraits the tab opens with, so Generate works on a first visit (assets/portraits/).
EXAMPLE_PORTRAITS = tuple(
    Path(__file__).resolve().parents[2] / "assets" / "portraits" / name
    for name in ("eileen_collins.jpg", "grace_hopper.jpg")
)
EXAMPLE_VOICES = {"S1": "jf_alpha", "S2": "jf_nezumi"}  # the example portraits are of two women


def portrait_editor(label: str, elem_id: str, people: int = 1, value: Any = None) -> image_annotator:
    """An upload that shows the picture with its face box(es) to drag, resize or draw anew."""
    return image_annotator(
        value,
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
    handlers = VideoHandlers(studio)
    # The tab opens with the example portraits boxed and previewed, as if the user had uploaded them.
    left_example, right_example = (
        handlers.found_faces({"image": str(path), "boxes": []}, 1) for path in EXAMPLE_PORTRAITS
    )
    example_frame, example_note = handlers.show(TWO_PORTRAITS, left_example, right_example, None, "480p")
    with gr.Row():
        with gr.Column(scale=2), gr.Tabs():
            with gr.Tab("Two portraits", elem_id="video-two-portraits") as two_tab, gr.Row():
                with gr.Column():
                    left = portrait_editor("Left portrait (S1)", "video-left", value=left_example)
                    left_box = gr.Textbox(
                        handlers.box_numbers(left_example),
                        label="Left face box: x0, y0, x1, y1 (pixels)",
                        elem_id="video-left-box",
                    )
                with gr.Column():
                    right = portrait_editor("Right portrait (S2)", "video-right", value=right_example)
                    right_box = gr.Textbox(
                        handlers.box_numbers(right_example),
                        label="Right face box: x0, y0, x1, y1 (pixels)",
                        elem_id="video-right-box",
                    )
            with gr.Tab("One picture of both", elem_id="video-one-picture") as one_tab:
                both = portrait_editor("Both people (left speaks S1)", "video-both", people=2)
        with gr.Column(scale=2):
            preview = gr.Image(
                example_frame,
                label="Preview (green: face, red: mouth, blue: eyes)",
                interactive=False,
                elem_id="video-preview",
            )
            faces_note = gr.Markdown(example_note, elem_id="video-faces")
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
                voice_s1, voice_s2 = (
                    voice_dropdown(
                        voice_choices,
                        EXAMPLE_VOICES[person],
                        f"{person} voice ({side})",
                        f"video-voice-{person.lower()}",
                    )
                    for person, side in (("S1", "left"), ("S2", "right"))
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
                gpus = gr.Dropdown(
                    ["auto", "1", "2", "4", "8"],
                    value="auto",
                    label=f"GPUs (this machine has {len(studio.allocator.devices)})",
                    info="one torchrun rank each (FSDP + Ulysses); auto: every free GPU the preset can use",
                    elem_id="video-gpus",
                )
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

    pictures = [mode, left, right, both, resolution]
    # Every event that reads a picture editor runs alone: reading one re-saves its picture under the
    # same cache path (gradio_image_annotation's preprocessing), and two at once could read a
    # half-written file. They are short; the video itself is followed outside the group.
    alone: dict[str, Any] = {"concurrency_id": "video-pictures", "concurrency_limit": 1}
    for editor, box in ((left, left_box), (right, right_box)):
        editor.upload(lambda value: handlers.found_faces(value, 1), editor, editor, **alone)
        # Every new box (found, dragged, drawn or typed) shows as numbers and in the preview, in one
        # event; "always_last": an edit made while the last one is being shown runs after it
        # (gradio's default drops it, and the preview would keep showing the older box).
        editor.change(
            handlers.box_changed,
            [editor, *pictures],
            [box, preview, faces_note],
            trigger_mode="always_last",
            **alone,
        )
        box.submit(handlers.typed_box, [editor, box], editor, trigger_mode="always_last", **alone)
        box.blur(handlers.typed_box, [editor, box], editor, trigger_mode="always_last", **alone)
    both.upload(lambda value: handlers.found_faces(value, 2), both, both, **alone)
    both.change(handlers.show, pictures, [preview, faces_note], trigger_mode="always_last", **alone)
    for tab, chosen in ((two_tab, TWO_PORTRAITS), (one_tab, ONE_PICTURE)):
        tab.select(lambda chosen=chosen: chosen, None, mode).then(
            handlers.show, pictures, [preview, faces_note], **alone
        )
    resolution.change(handlers.show, pictures, [preview, faces_note], trigger_mode="always_last", **alone)
    preset.change(lambda name: PRESET_STEPS[name], preset, steps)
    script.change(handlers.script_changed, script, parsed)
    advanced = [steps, text_guidance, audio_guidance, seed, gpus]
    generate.click(
        handlers.generate,
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
    ).success(handlers.follow, task_id, [status, player, downloads])
    cancel.click(handlers.cancel, task_id, status)
