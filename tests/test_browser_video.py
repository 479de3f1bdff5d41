"""The Video tab as a user drives it in a real headless Chromium against `python app.py`.

Two portraits are uploaded (each face is boxed, the box shows as numbers and the preview outlines
the faces): one arrives sideways and is turned back with the editor's rotate button, and a blurred
one the detector misses gets its face box dragged by hand and the preview takes it; a 4-turn script is pasted, Generate makes a video that the tab plays and offers for download; the
downloaded MP4 is H.264 + AAC, as long as the dialogue, carries the dialogue's audio, and each
person's mouth moves in their own turns only. The `browser`, `page` and `live_server` fixtures are in
conftest.py; the checks are shared with the API test (tests/video_checks.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urljoin

import cv2
import httpx
import numpy as np
import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright pip package is not installed")

from tests.video_checks import SCRIPT, check_video, png, portraits  # noqa: E402

pytestmark = pytest.mark.browser

GENERATE_TIMEOUT_MS = 240_000
BOX = re.compile(r"^\d+, \d+, \d+, \d+$")


def text_field(page: sync_api.Page, elem_id: str) -> sync_api.Locator:
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def drag_box(page: sync_api.Page, elem_id: str, image_size: tuple[int, int], box: list[int]) -> None:
    """Drag a new box from (x0, y0) to (x1, y1), in image pixels, on a portrait's box editor."""
    canvas = page.locator(f"#{elem_id} canvas").first
    area = canvas.bounding_box()
    assert area, "the box editor shows no canvas"
    width, height = image_size
    scale = min(area["width"] / width, area["height"] / height)  # the image is fitted and centered
    left = area["x"] + (area["width"] - width * scale) / 2
    top = area["y"] + (area["height"] - height * scale) / 2
    x0, y0, x1, y1 = box
    page.mouse.move(left + x0 * scale, top + y0 * scale)
    page.mouse.down()
    page.mouse.move(left + x1 * scale, top + y1 * scale, steps=10)
    page.mouse.up()


def wait_for_box(
    page: sync_api.Page, elem_id: str, expected: list[int], pixels: int = 3, give_up: bool = True
) -> bool:
    """Wait until a box field shows `expected` within `pixels` (a drag sends boxes on the way there);
    after 10 s fail the test, or with `give_up=False` say False."""
    field, shown = text_field(page, elem_id), ""
    for _ in range(100):
        shown = field.input_value()
        if (
            BOX.match(shown)
            and max(abs(int(a) - b) for a, b in zip(shown.split(", "), expected, strict=True)) <= pixels
        ):
            return True
        page.wait_for_timeout(100)
    if give_up:
        pytest.fail(f"the box field shows {shown!r}, not {expected} (within {pixels} px)")
    return False


def fetch(page: sync_api.Page, name: str, folder: Path) -> Path:
    """Download one result file through its link in the tab's file list."""
    link = page.locator(f"#video-files a[href$='/{name}']")
    sync_api.expect(link).to_have_count(1)
    href = link.get_attribute("href")
    assert href, f"the {name} link has no href"
    response = httpx.get(urljoin(page.url, href), timeout=30)
    assert response.status_code == 200, (name, response.text[:300])
    path = folder / name
    path.write_bytes(response.content)
    return path


def test_video_tab_opens_with_an_example_that_generates_without_any_upload(
    page: sync_api.Page, tmp_path: Path
) -> None:
    """A first visit: both example portraits are there with their faces boxed, the preview shows
    the frame, and the voices suit them; Generate makes the video from the example as it is."""
    page.get_by_role("tab", name="Video").click()
    for side in ("left", "right"):
        sync_api.expect(text_field(page, f"video-{side}-box")).to_have_value(BOX)
        sync_api.expect(
            page.locator(f"#video-{side}").get_by_role("button", name="Remove Image")
        ).to_be_visible()
    sync_api.expect(page.locator("#video-faces")).to_contain_text(
        "S1 (left): face detected in the box · S2 (right): face detected in the box"
    )
    sync_api.expect(page.locator("#video-preview img")).to_be_visible()
    sync_api.expect(page.locator("#video-voice-s2 input")).to_have_value(re.compile(r"\(jf_nezumi, kokoro\)"))
    generate_and_check(page, tmp_path, script=None)


@pytest.mark.slow
def test_video_tab_makes_a_two_person_video_whose_mouths_follow_the_turns(
    page: sync_api.Page, tmp_path: Path
) -> None:
    left, right = portraits()
    # The left portrait arrives sideways (turned a quarter counterclockwise, as phone photos do):
    # the user turns it back with the editor's rotate button.
    (tmp_path / "left.png").write_bytes(png(np.ascontiguousarray(np.rot90(left))))
    (tmp_path / "right.png").write_bytes(png(right))
    # The same face blurred: the cascade finds nothing, so the user boxes it by hand.
    (tmp_path / "blurred.png").write_bytes(png(cv2.GaussianBlur(right, (0, 0), 12)))
    faces = page.locator("#video-faces")

    page.get_by_role("tab", name="Video").click()
    sync_api.expect(page.get_by_role("tab", name="Video")).to_have_attribute("aria-selected", "true")
    page.locator("#video-left input[type=file]").set_input_files(tmp_path / "left.png")
    sync_api.expect(page.locator(".toast-body").filter(has_text="found 0 of 1 face")).to_be_visible()
    sync_api.expect(text_field(page, "video-left-box")).to_have_value("")
    page.locator("#video-left").get_by_role("button", name="Rotate clockwise").click()

    warnings = page.locator(".toast-body").filter(has_text="found 0 of 1 face")
    for close in page.locator(".toast-close").all():  # the left portrait's warning
        close.click()
    sync_api.expect(warnings).to_have_count(0)
    page.locator("#video-right input[type=file]").set_input_files(tmp_path / "blurred.png")
    # The upload's own search has answered (its warning) before the user draws: its empty result
    # would otherwise land after the drawn box and clear it.
    sync_api.expect(warnings).to_have_count(1)
    sync_api.expect(faces).to_contain_text("no face found in image_right (the right portrait)")
    sync_api.expect(text_field(page, "video-right-box")).to_have_value("")
    face = [166, 44, 265, 143]  # where the sharp picture's face is found
    # A box drawn while the editor is still taking the upload's answer can be lost (a known race,
    # see the closing note); a user then draws it again, and so does this test, at most twice more.
    for _ in range(3):
        drag_box(page, "video-right", (right.shape[1], right.shape[0]), face)
        if wait_for_box(page, "video-right-box", face, give_up=False):
            break
    wait_for_box(page, "video-right-box", face)
    sync_api.expect(faces).to_contain_text(
        "S2 (right): no face detected in the box: the box is used as drawn"
    )
    sync_api.expect(page.locator("#video-preview img")).to_be_visible()

    page.locator("#video-right").get_by_role("button", name="Remove Image").click()
    sync_api.expect(text_field(page, "video-right-box")).to_have_value("")
    page.locator("#video-right input[type=file]").set_input_files(tmp_path / "right.png")
    right_box = text_field(page, "video-right-box")
    sync_api.expect(right_box).to_have_value(BOX)
    found = right_box.input_value()
    right_box.fill("0, 0, 60, 60")  # typed numbers move the box (here off the face) ...
    right_box.press("Enter")
    sync_api.expect(faces).to_contain_text("S2 (right): no face detected in the box")
    right_box.fill(found)  # ... and back
    right_box.press("Enter")
    sync_api.expect(faces).to_contain_text("S2 (right): face detected in the box")
    sync_api.expect(faces).to_contain_text("S1 (left): face detected")  # in the turned picture
    sync_api.expect(faces).to_contain_text("S2 (right): face detected")
    sync_api.expect(page.locator("#video-preview img")).to_be_visible()

    generate_and_check(page, tmp_path)


def test_one_picture_of_both_people_makes_the_video_too(page: sync_api.Page, tmp_path: Path) -> None:
    both = np.concatenate(portraits(), axis=1)  # 800 x 380: S1 on the left, S2 on the right
    (tmp_path / "both.png").write_bytes(png(both))
    faces = page.locator("#video-faces")

    page.get_by_role("tab", name="Video").click()
    page.get_by_role("tab", name="One picture of both").click()
    sync_api.expect(faces).to_contain_text("upload the picture of both people")
    page.locator("#video-both input[type=file]").set_input_files(tmp_path / "both.png")
    sync_api.expect(faces).to_contain_text("S1 (left): face detected in the box")  # the two found boxes
    sync_api.expect(faces).to_contain_text("S2 (right): face detected in the box")
    sync_api.expect(page.locator("#video-preview img")).to_be_visible()

    drag_box(page, "video-both", (both.shape[1], both.shape[0]), [380, 250, 440, 330])  # a third box
    sync_api.expect(faces).to_contain_text("3 box(es) drawn on the picture: draw one box per person")
    page.locator("#video-both").get_by_role("button", name="Remove Image").click()
    sync_api.expect(faces).to_contain_text("upload the picture of both people")  # before the next upload
    page.locator("#video-both input[type=file]").set_input_files(tmp_path / "both.png")
    sync_api.expect(faces).to_contain_text("S2 (right): face detected in the box")

    generate_and_check(page, tmp_path)


def generate_and_check(page: sync_api.Page, folder: Path, script: str | None = SCRIPT) -> None:
    """Paste a 4-turn script (None: keep the tab's example, 4 turns too), generate, and check the
    video the tab offers."""
    if script is not None:
        field = text_field(page, "video-script")
        field.fill(script)
        sync_api.expect(field).to_have_value(script)
    sync_api.expect(page.locator("#video-parsed")).to_contain_text("4 turns, 2 speakers")

    page.locator("#video-generate").click()
    done = page.locator("#video-status").filter(has_text="Done")
    error = page.locator(".toast-body.error")
    done.or_(error).first.wait_for(state="visible", timeout=GENERATE_TIMEOUT_MS)
    if error.count():
        pytest.fail(f"the studio showed an error: {error.first.inner_text()!r}")
    sync_api.expect(page.locator("#video-status")).to_contain_text("4 turns")
    sync_api.expect(page.locator("#video-player video")).to_have_attribute("src", re.compile(r"video\.mp4"))
    page.screenshot(path=folder / "video_tab.png", full_page=True)

    video = fetch(page, "video.mp4", folder)
    wav = fetch(page, "dialogue.wav", folder)
    timing = json.loads(fetch(page, "timing.json", folder).read_text())
    assert "[S1]" in fetch(page, "dialogue.srt", folder).read_text()
    assert [t["speaker"] for t in timing] == ["S1", "S2", "S1", "S2"]
    check_video(video, wav, timing)
