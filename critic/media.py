"""Defensive loading of the images and videos that a judge reads.

Every function returns fully decoded RGB ``PIL.Image`` objects or raises :class:`MediaError` with a reason that
names the source, so a bad file becomes that item's error record and never crashes a batch.

* Decompression bombs are refused *before* decoding: the header's size is checked against ``max_pixels``.
  Pillow's own global limit is left alone; its bomb warning/error is turned into a ``MediaError`` locally.
* Truncated, empty, missing and non-image files are errors (``LOAD_TRUNCATED_IMAGES`` is never switched on).
* EXIF orientation is applied.  Modes are converted properly: CMYK → RGB, 16-bit → 8-bit by scaling (not
  clipping), float → 8-bit by the image's own range, transparency composited onto white (a transparent pixel
  becomes white, which is how viewers show it), palettes expanded.  Animated images give their first frame.
* Videos are decoded with OpenCV (the ``video`` extra) and sampled uniformly to ``num_frames`` frames; a list of
  frames is accepted too.  A video with no decodable frame is an error.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MediaSource = Union[str, Path, bytes, Image.Image]
"""A file path, raw bytes, a PIL image, a ``data:`` URL or a plain base64 string."""

#: Refuse images above this many pixels (a 8000 × 8000 photo passes; a forged 20000 × 20000 header does not).
DEFAULT_MAX_PIXELS = 64_000_000
#: Hard cap on frames read sequentially when a video does not report its frame count.
MAX_SEQUENTIAL_FRAMES = 20_000


class MediaError(ValueError):
    """An image or video that cannot be used; the message names the source and the reason."""


def _describe(source: object) -> str:
    if isinstance(source, (str, Path)):
        text = str(source)
        return f"'{text[:60]}…'" if len(text) > 60 else f"'{text}'"
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def _read_bytes(source: str | Path | bytes, name: str) -> bytes:
    if isinstance(source, bytes):
        return source
    text = str(source)
    if isinstance(source, str) and text.startswith("data:"):
        _, _, payload = text.partition(",")
        if ";base64" not in text.split(",", 1)[0]:
            raise MediaError(f"image {name}: only base64 data URLs are supported")
        return _b64(payload, name)
    path = Path(text)
    if path.is_file():
        return path.read_bytes()
    # Long strings of base64 characters that are not paths are taken as base64 payloads.
    if isinstance(source, str) and len(text) > 64 and "/" not in text[:8] and not path.suffix:
        return _b64(text, name)
    raise MediaError(f"image {name}: file not found")


def _b64(payload: str, name: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(f"image {name}: invalid base64 data ({exc})") from None


def load_image(source: MediaSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``source`` defensively and return a fully decoded RGB image (see the module docstring)."""
    name = _describe(source)
    if isinstance(source, Image.Image):
        image = source
        if image.width * image.height > max_pixels:
            raise MediaError(f"image {name}: {image.width}x{image.height} exceeds the cap of {max_pixels} pixels")
        return to_rgb(ImageOps.exif_transpose(image) or image)
    if not isinstance(source, (str, Path, bytes)):
        raise MediaError(f"image {name}: unsupported source type {type(source).__name__}")
    data = _read_bytes(source, name)
    if not data:
        raise MediaError(f"image {name}: empty file")
    with warnings.catch_warnings():
        # Pillow warns (and past 2× its limit raises) on huge images; both are refusals here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                raise MediaError(
                    f"image {name}: {image.width}x{image.height} exceeds the cap of {max_pixels} pixels "
                    "(possible decompression bomb)"
                )
            image.seek(0)  # animated images: the first frame
            image.load()
        except MediaError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise MediaError(f"image {name}: refused as a decompression bomb ({exc})") from None
        except UnidentifiedImageError:
            raise MediaError(f"image {name}: not a recognised image format") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise MediaError(f"image {name}: truncated or corrupt file ({exc})") from None
    try:
        image = ImageOps.exif_transpose(image) or image
    except Exception:  # a broken EXIF block should not lose an otherwise good image
        pass
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency onto white."""
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit samples: keep the top 8 bits (65535 → 255), rather than clipping everything above 255.
        array = (np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(array, "L").convert("RGB")
    if mode in ("I", "F"):
        # 32-bit int or float samples have no fixed range: scale the image's own range to 0–255.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        if mode == "I" and low >= 0 and high <= 65535:
            low, high = 0.0, 65535.0 if high > 255 else 255.0
        scaled = np.zeros_like(array) if high <= low else (array - low) / (high - low) * 255.0
        return Image.fromarray(np.nan_to_num(scaled).round().astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "L" and "transparency" in image.info:
        return to_rgb(image.convert("LA"))
    # CMYK (Pillow handles Adobe's inverted JPEG CMYK when decoding), YCbCr, LAB, HSV, 1, L, RGBX …
    return image.convert("RGB")


def load_video(
    source: str | Path | Sequence[MediaSource], *, num_frames: int = 8, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[Image.Image]:
    """Frames of a video file (sampled uniformly) or of a list of frames, as RGB images."""
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    if isinstance(source, (list, tuple)):
        if not source:
            raise MediaError("video: the list of frames is empty")
        picks = _uniform(len(source), num_frames)
        frames = [load_image(source[i], max_pixels=max_pixels) for i in picks]
        # Video processors stack frames into one array, so frames of one video must share a size.
        size = frames[0].size
        return [f if f.size == size else f.resize(size, Image.Resampling.BICUBIC) for f in frames]
    if not isinstance(source, (str, Path)):
        raise MediaError(f"video {_describe(source)}: give a file path or a list of frames")
    name = _describe(source)
    if not Path(source).is_file():
        raise MediaError(f"video {name}: file not found")
    try:
        import cv2
    except ImportError as exc:
        raise ImportError("reading video files needs OpenCV: pip install 'critic-judge[video]'") from exc
    capture = cv2.VideoCapture(str(source))
    try:
        if not capture.isOpened():
            raise MediaError(f"video {name}: cannot be opened as a video")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > max_pixels:
            raise MediaError(f"video {name}: frames of {width}x{height} exceed the cap of {max_pixels} pixels")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        frames = _read_seek(capture, count, num_frames) if count > 0 else []
        if not frames:
            # The reported count is missing or wrong: read sequentially (bounded), then sample.
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            every = []
            while len(every) < MAX_SEQUENTIAL_FRAMES:
                ok, frame = capture.read()
                if not ok:
                    break
                every.append(frame)
            frames = [every[i] for i in _uniform(len(every), num_frames)] if every else []
    finally:
        capture.release()
    if not frames:
        raise MediaError(f"video {name}: no decodable frames")
    return [Image.fromarray(cv2.cvtColor(f, cv2.COLOR_BGR2RGB)) for f in frames]


def _read_seek(capture: object, count: int, num_frames: int) -> list[np.ndarray]:
    import cv2

    frames = []
    for index in _uniform(count, num_frames):
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)  # type: ignore[attr-defined]
        ok, frame = capture.read()  # type: ignore[attr-defined]
        if not ok:
            return []  # seeking failed or the count lied; the caller falls back to sequential reading
        frames.append(frame)
    return frames


def _uniform(total: int, wanted: int) -> list[int]:
    """``wanted`` indices spread evenly over ``range(total)`` (centre of each segment), all of them if fewer."""
    if total <= wanted:
        return list(range(total))
    return [int((k + 0.5) * total / wanted) for k in range(wanted)]


def image_to_data_url(image: Image.Image, format: str = "PNG") -> str:
    """Encode an image as a ``data:`` URL (how OpenAI-compatible servers take images)."""
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return f"data:image/{format.lower()};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
