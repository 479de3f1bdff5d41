"""Portraits for the talking video: uploads decoded safely, and each face with its mouth and eyes found.

An upload is decoded by Pillow only after its header says it is a still image of a sane size (a
hostile file is refused with a 4xx that says what to send instead), turned upright (EXIF), and kept
as RGB no larger than the renderer can use. Faces are found with OpenCV's Haar cascades (face, then
eyes and mouth inside it); where a cascade finds nothing, the mouth and eyes sit where they sit on
a frontal face, and a face the cascade misses can be given as a box.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from functools import cache
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from studio.errors import BadInput, TooLarge, UnsupportedMedia

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
MAX_PIXELS = 40_000_000  # a 40-megapixel photo is the largest upload decoded
MIN_SIDE = 64
KEEP_SIDE = 2048  # longest side kept: 720p needs no more, and detection runs on less
DETECT_SIDE = 640  # Haar runs on a copy this large: fast, and faces stay big enough
MIN_FACE_FRACTION = 0.08  # faces smaller than this share of the image's short side are not looked for


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels: [x0, x1) x [y0, y1), the MultiTalk `bbox` order."""

    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def of(cls, x: float, y: float, width: float, height: float) -> Box:
        """From OpenCV's (x, y, w, h) (numpy integers), as plain floats."""
        return cls(float(x), float(y), float(x + width), float(y + height))

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def scaled(self, factor: float, dx: float = 0.0, dy: float = 0.0) -> Box:
        """The box after scaling its coordinates by `factor`, then shifting by (dx, dy)."""
        return Box(self.x0 * factor + dx, self.y0 * factor + dy, self.x1 * factor + dx, self.y1 * factor + dy)

    def clipped(self, width: int, height: int) -> Box:
        return Box(
            min(max(self.x0, 0), width), min(max(self.y0, 0), height),
            min(max(self.x1, 0), width), min(max(self.y1, 0), height),
        )  # fmt: skip

    def slices(self) -> tuple[slice, slice]:
        """Row and column slices of the pixels the box covers (rounded outward)."""
        return slice(int(self.y0), int(np.ceil(self.y1))), slice(int(self.x0), int(np.ceil(self.x1)))

    def as_list(self) -> list[int]:
        return [round(self.x0), round(self.y0), round(self.x1), round(self.y1)]

    @classmethod
    def parse(cls, value: Any, what: str) -> Box:
        """[x0, y0, x1, y1] from a client; the error names `what` and the rule broken."""
        if (
            not isinstance(value, list | tuple)
            or len(value) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            raise BadInput(
                f"{what} must be four numbers [x0, y0, x1, y1] in pixels, got {value!r}", "bad_bbox"
            )
        box = cls(*(float(v) for v in value))
        if box.width < 8 or box.height < 8:
            raise BadInput(
                f"{what} {value} is empty or smaller than 8 pixels: x1 > x0 and y1 > y0", "bad_bbox"
            )
        return box


@dataclass(frozen=True)
class FaceLayout:
    """One face in one image: its box, the mouth and eyes inside it, and how the face was found."""

    face: Box
    mouth: Box
    eyes: tuple[Box, ...]
    found: str  # "detected", "detected in the given box" or "given"

    def scaled(self, factor: float, dx: float = 0.0, dy: float = 0.0) -> FaceLayout:
        return FaceLayout(
            self.face.scaled(factor, dx, dy),
            self.mouth.scaled(factor, dx, dy),
            tuple(eye.scaled(factor, dx, dy) for eye in self.eyes),
            self.found,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "face": self.face.as_list(),
            "mouth": self.mouth.as_list(),
            "eyes": [eye.as_list() for eye in self.eyes],
            "found": self.found,
        }


@dataclass(frozen=True)
class Portrait:
    """An uploaded image, upright RGB, at most KEEP_SIDE; `scale` maps upload pixels to these pixels."""

    pixels: np.ndarray
    scale: float

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]


def load_portrait(data: bytes, what: str) -> Portrait:
    """Decode an uploaded image; 415 for what is not a still image we read, 413 for too many pixels."""
    if not data:
        raise BadInput(f"{what} is empty: upload a JPEG, PNG, WebP or BMP photo", "empty_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in IMAGE_FORMATS:
                raise UnsupportedMedia(
                    f"{what} is {image.format or 'an unknown format'}; upload a JPEG, PNG, WebP or BMP photo",
                    "unsupported_image",
                )
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise TooLarge(
                    f"{what} is {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels",
                    "image_too_large",
                )
            image = _upright_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge(
            f"{what} claims more pixels than the {MAX_PIXELS // 1_000_000} megapixel limit", "image_too_large"
        ) from None
    except UnidentifiedImageError:
        raise UnsupportedMedia(
            f"{what} is not an image we can read: upload a JPEG, PNG, WebP or BMP photo", "unsupported_image"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data behind a valid header
        raise UnsupportedMedia(
            f"{what} could not be decoded ({error}); upload the photo again or as PNG/JPEG", "corrupt_image"
        ) from None
    if min(image.size) < MIN_SIDE:
        raise BadInput(
            f"{what} is {image.size[0]}x{image.size[1]} pixels; a portrait needs at least {MIN_SIDE} a side",
            "image_too_small",
        )
    scale = min(1.0, KEEP_SIDE / max(image.size))
    if scale < 1.0:
        image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.LANCZOS)
    return Portrait(np.asarray(image, dtype=np.uint8).copy(), scale)


def _upright_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, turned as its EXIF orientation says. 16-bit grey (a PNG's "I;16" or "I") is scaled
    to 8 bits: Pillow's own convert clips it, which turns a 16-bit photo almost white."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "I" or image.mode.startswith("I;16"):
        grey = np.asarray(image).astype(np.float32) / 257.0
        image = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


@cache
def _cascade(name: str) -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if cascade.empty():
        raise RuntimeError(f"OpenCV's {name} is missing: install opencv-python-headless<5")
    return cascade


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))


def detect_faces(image: np.ndarray) -> list[Box]:
    """Frontal faces in an RGB image, the most certain first (Haar cascade on a copy at most DETECT_SIDE;
    its final-stage weight ranks them: a face-like patch of background scores far below a face)."""
    factor = min(1.0, DETECT_SIDE / max(image.shape[:2]))
    small = (
        cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA) if factor < 1 else image
    )
    smallest = max(24, int(MIN_FACE_FRACTION * min(small.shape[:2])))
    found, _, weights = _cascade("haarcascade_frontalface_default.xml").detectMultiScale3(
        _gray(small), scaleFactor=1.1, minNeighbors=5, minSize=(smallest, smallest), outputRejectLevels=True
    )
    ranked = sorted(zip(found, np.ravel(weights), strict=True), key=lambda pair: -pair[1])
    return [Box.of(*box).scaled(1 / factor) for box, _ in ranked]


def locate_face(image: np.ndarray, hint: Box | None, what: str) -> FaceLayout:
    """The face in `image` (the largest one), or inside `hint`; with no face found, `hint` is the face."""
    if hint is not None:
        region = hint.clipped(image.shape[1], image.shape[0])
        if region.width < 8 or region.height < 8:
            raise BadInput(
                f"the box for {what} {hint.as_list()} lies outside the {image.shape[1]}x{image.shape[0]} image",
                "bad_bbox",
            )
        inside = [b for b in detect_faces(image) if _contains(region, b.center)]
        if inside:
            return features(image, inside[0], "detected in the given box")
        return features(image, region, "given")
    faces = detect_faces(image)
    if not faces:
        raise BadInput(
            f"no face found in {what}: use a frontal, well-lit portrait, or give the face's box as "
            "[x0, y0, x1, y1] pixels ('bboxes' in the API, the box fields in the UI)",
            "no_face",
        )
    return features(image, faces[0], "detected")


def locate_two_faces(
    image: np.ndarray, hints: tuple[Box | None, Box | None]
) -> tuple[FaceLayout, FaceLayout]:
    """The two people of one image, left (S1) then right (S2): given boxes first, else the two largest faces."""
    if hints[0] is not None and hints[1] is not None:
        return locate_face(image, hints[0], "the image's left person"), locate_face(
            image, hints[1], "the image's right person"
        )
    faces = detect_faces(image)[:2]
    if len(faces) < 2:
        raise BadInput(
            f"found {len(faces)} face(s) in the image; it must show both people facing the camera, or give "
            'both boxes in \'bboxes\' as {"S1": [x0, y0, x1, y1], "S2": [x0, y0, x1, y1]}',
            "no_face",
        )
    left, right = sorted(faces, key=lambda b: b.center[0])
    return features(image, left, "detected"), features(image, right, "detected")


def features(image: np.ndarray, face: Box, found: str) -> FaceLayout:
    """Mouth and eyes inside a face box: Haar where it finds them in their usual place, else that place."""
    rows, cols = face.slices()
    gray = _gray(np.ascontiguousarray(image[rows, cols]))
    fw, fh = face.width, face.height
    return FaceLayout(face, _mouth(gray, face, fw, fh), _eyes(gray, face, fw, fh), found)


def _mouth(gray: np.ndarray, face: Box, fw: float, fh: float) -> Box:
    # Where a frontal face's mouth is, in a Haar face box (measured on photos: centre at 78% height).
    expected_x, expected_y = face.x0 + 0.5 * fw, face.y0 + 0.78 * fh
    top = gray.shape[0] // 2
    smiles = _cascade("haarcascade_smile.xml").detectMultiScale(
        gray[top:], scaleFactor=1.15, minNeighbors=15, minSize=(max(8, int(0.25 * fw)), max(4, int(0.1 * fh)))
    )
    candidates = [
        Box.of(face.x0 + x, face.y0 + top + y, w, h) for x, y, w, h in smiles if 0.3 * fw <= w <= 0.75 * fw
    ]
    plausible = [
        b
        for b in candidates
        if abs(b.center[0] - expected_x) < 0.12 * fw and abs(b.center[1] - expected_y) < 0.1 * fh
    ]
    if plausible:
        best = min(plausible, key=lambda b: abs(b.center[1] - expected_y) + abs(b.center[0] - expected_x))
        cx, cy = best.center
        width = min(best.width, 0.5 * fw)
    else:
        cx, cy, width = expected_x, expected_y, 0.42 * fw
    cy = _lip_line(gray, cx - face.x0, cy - face.y0, width, fh) + face.y0
    return Box(cx - width / 2, cy - 0.07 * fh, cx + width / 2, cy + 0.07 * fh)


def _lip_line(gray: np.ndarray, cx: float, cy: float, width: float, fh: float) -> float:
    """The row where the lips meet: the darkest row across the mouth's middle, near where it is expected."""
    low, high = max(0, int(cy - 0.06 * fh)), min(gray.shape[0], int(cy + 0.06 * fh) + 1)
    cols = slice(max(0, int(cx - 0.3 * width)), int(cx + 0.3 * width) + 1)
    profile = gray[low:high, cols].mean(axis=1)
    if profile.size < 3:
        return cy
    smooth = np.convolve(profile, np.ones(3) / 3, mode="same")[1:-1]
    return float(low + 1 + int(np.argmin(smooth)))


def _eyes(gray: np.ndarray, face: Box, fw: float, fh: float) -> tuple[Box, ...]:
    upper = gray[: int(0.6 * gray.shape[0])]
    found = _cascade("haarcascade_eye.xml").detectMultiScale(
        upper, scaleFactor=1.1, minNeighbors=5, minSize=(max(6, int(0.12 * fw)), max(6, int(0.12 * fw)))
    )
    eyes = [
        Box.of(face.x0 + x, face.y0 + y, w, h)
        for x, y, w, h in found
        if w <= 0.4 * fw and 0.2 * fh <= y + h / 2 <= 0.55 * fh
    ]
    left = [e for e in eyes if e.center[0] < face.x0 + 0.5 * fw]
    right = [e for e in eyes if e.center[0] >= face.x0 + 0.5 * fw]
    if left and right:  # one each side, or the cascade's guess is not to be trusted
        return max(left, key=lambda b: b.width), max(right, key=lambda b: b.width)
    size_x, size_y = 0.22 * fw, 0.16 * fh
    return tuple(
        Box(
            cx - size_x / 2, face.y0 + 0.4 * fh - size_y / 2, cx + size_x / 2, face.y0 + 0.4 * fh + size_y / 2
        )
        for cx in (face.x0 + 0.3 * fw, face.x0 + 0.7 * fw)
    )


def _contains(box: Box, point: tuple[float, float]) -> bool:
    return box.x0 <= point[0] <= box.x1 and box.y0 <= point[1] <= box.y1


def draw_layout(image: np.ndarray, layouts: list[FaceLayout]) -> np.ndarray:
    """A copy of `image` with each face (green), mouth (red) and eyes (blue) outlined, for checking."""
    canvas = image.copy()
    thickness = max(2, round(max(image.shape[:2]) / 400))
    for layout in layouts:
        for box, colour in [(layout.face, (0, 220, 0)), (layout.mouth, (230, 30, 30))] + [
            (eye, (40, 120, 255)) for eye in layout.eyes
        ]:
            x0, y0, x1, y1 = box.as_list()
            cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, thickness)
    return canvas
