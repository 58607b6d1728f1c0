"""Defensive loading of the images and videos a judge reads.

Everything a judge looks at goes through here, so that a bad input fails early with a reason that names it,
instead of crashing deep inside a processor or silently feeding the model a wrong picture:

- :func:`load_image` accepts a path, raw bytes, a ``PIL.Image.Image``, a ``data:`` URL or a plain base64 string,
  rejects decompression bombs *before* decoding, decodes fully (so truncated files fail here, not later), applies
  EXIF orientation and converts every Pillow mode to 8-bit RGB.
- :func:`load_video` samples frames uniformly from a video file (OpenCV, the ``video`` extra) or from a sequence
  of images.
- :func:`image_to_data_url` turns an image back into a ``data:`` URL for OpenAI-compatible servers.

Every failure is a :class:`MediaError` (a ``ValueError``) whose message starts with the source, e.g.
``image 'x.png': truncated or corrupt file (image file is truncated)``.

Nothing here changes Pillow's global state: ``PIL.Image.MAX_IMAGE_PIXELS`` and
``ImageFile.LOAD_TRUNCATED_IMAGES`` are left alone; Pillow's bomb warning is turned into an error only inside a
local ``warnings.catch_warnings`` block.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import urllib.parse
import warnings
from collections.abc import Sequence
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_SEQUENTIAL_FRAMES",
    "MediaError",
    "MediaSource",
    "image_to_data_url",
    "load_image",
    "load_video",
]

MediaSource = Union[str, os.PathLike[str], bytes, bytearray, memoryview, Image.Image]
"""What :func:`load_image` accepts: a path, encoded bytes, a PIL image, a ``data:`` URL or a base64 string."""

DEFAULT_MAX_PIXELS = 8192 * 8192
"""64 Mi pixels (e.g. 8192x8192): far above any vision encoder's input, yet an RGB decode stays under 200 MB.

Pillow's own limit (``MAX_IMAGE_PIXELS``, about 89 M) is still honoured too, so the effective cap is the smaller.
"""

MAX_SEQUENTIAL_FRAMES = 100_000
"""When a video does not report its frame count, at most this many frames (about an hour at 30 fps) are scanned
to count them; longer streams are sampled from their first ``MAX_SEQUENTIAL_FRAMES`` frames."""

_WHITE = (255, 255, 255)


class MediaError(ValueError):
    """An image or video could not be loaded; the message names the source and the reason."""


# --------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------


def load_image(source: MediaSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load ``source`` as a fully decoded RGB image (a new object; a PIL input is never modified).

    Raises :class:`MediaError` for missing, empty, truncated, non-image or oversized inputs (more than
    ``max_pixels`` pixels, checked from the header before any pixel is decoded). Transparent pixels are
    composited onto white, the background most documents and web pages assume. Animated images give their
    first frame.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    if isinstance(source, Image.Image):
        name = f"<PIL.Image mode={source.mode} size={source.size[0]}x{source.size[1]}>"
        _check_pixels(name, source.size, max_pixels)
        return _decode(name, source, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _open_and_decode(f"<{len(data)} bytes>", io.BytesIO(data), len(data), max_pixels)
    if isinstance(source, os.PathLike):
        return _load_path(os.fspath(source), max_pixels)
    if isinstance(source, str):
        if source[:5].lower() == "data:":
            name, data = _parse_data_url(source)
            return _open_and_decode(name, io.BytesIO(data), len(data), max_pixels)
        # os.path.isfile, unlike Path.exists, returns False instead of raising on names that are too long, so a
        # megabyte of base64 is safe to test here.
        if os.path.isfile(source):
            return _load_path(source, max_pixels)
        data = _try_base64(source)
        # Under 16 bytes nothing is an image, so a short name like "cat1" that happens to be valid base64 is
        # still reported as a missing file.
        if data is None or len(data) < 16:
            return _load_path(source, max_pixels)  # reports "file not found" (or "is a directory")
        name = f"<base64 string, {len(source)} chars (no file of that name exists)>"
        return _open_and_decode(name, io.BytesIO(data), len(data), max_pixels)
    # A MediaError, not a TypeError: a wrong value in one item of a JSONL batch must fail only that item.
    raise MediaError(f"image <{type(source).__name__}>: unsupported source type (give a path, bytes, a PIL image, "
                     "a data URL or a base64 string)")


def image_to_data_url(image: Image.Image, format: str = "PNG") -> str:
    """Encode ``image`` as a ``data:<mime>;base64,...`` URL, the form OpenAI-compatible servers accept."""
    fmt = format.upper()
    fmt = "JPEG" if fmt == "JPG" else fmt
    Image.init()  # Pillow fills its MIME table only once plugins are loaded (normally on the first open)
    mime = Image.MIME.get(fmt)
    if mime is None:
        raise ValueError(f"unknown image format {format!r}")
    # JPEG has no alpha or palette; convert rather than let Pillow raise "cannot write mode RGBA as JPEG".
    if fmt == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        image = load_image(image, max_pixels=max(1, image.width * image.height))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _name(path: str) -> str:
    return repr(path) if len(path) <= 80 else repr(path[:77] + "...")


def _load_path(path: str, max_pixels: int) -> Image.Image:
    name = _name(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            return _open_and_decode(name, handle, size, max_pixels)
    except FileNotFoundError:
        raise MediaError(f"image {name}: file not found") from None
    except IsADirectoryError:
        raise MediaError(f"image {name}: is a directory, not an image file") from None
    except PermissionError as exc:
        raise MediaError(f"image {name}: permission denied ({exc.strerror})") from None
    except OSError as exc:  # e.g. "File name too long" for a string that is neither a path nor base64
        raise MediaError(f"image {name}: cannot read file ({exc.strerror or exc})") from None


def _open_and_decode(name: str, fp: io.IOBase, size: int, max_pixels: int) -> Image.Image:
    """Open lazily (header only), check the pixel count, then decode. ``fp`` must stay open until we return."""
    if size == 0:
        raise MediaError(f"image {name}: empty file")
    with warnings.catch_warnings():
        # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; make it an error here, locally.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(fp)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise MediaError(_bomb_message(name, max_pixels, f"declared size ({exc})")) from None
        except UnidentifiedImageError:
            raise MediaError(f"image {name}: not a recognised image format") from None
        except Exception as exc:  # Pillow plugins raise many kinds on malformed headers
            raise MediaError(f"image {name}: corrupt image header ({exc})") from None
    with image:
        _check_pixels(name, image.size, max_pixels)
        return _decode(name, image, max_pixels)


def _decode(name: str, image: Image.Image, max_pixels: int) -> Image.Image:
    """Decode every pixel now, so truncation surfaces here and not inside a model's processor."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise MediaError(_bomb_message(name, max_pixels, f"declared size ({exc})")) from None
        except MemoryError:
            raise
        except Exception as exc:  # OSError, SyntaxError, EOFError, struct.error, ... depending on the plugin
            raise MediaError(f"image {name}: truncated or corrupt file ({exc})") from None
    try:
        # exif_transpose returns a new image (a copy when there is nothing to do), so the input is never aliased.
        image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a malformed EXIF block should not lose an otherwise good image
        image = image.copy()
    try:
        return _to_rgb(image)
    except (ValueError, OSError) as exc:
        raise MediaError(f"image {name}: cannot convert mode {image.mode} to RGB ({exc})") from None


def _check_pixels(name: str, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise MediaError(_bomb_message(name, max_pixels, f"{width}x{height} = {width * height} pixels"))


def _bomb_message(name: str, max_pixels: int, detail: str) -> str:
    return (
        f"image {name}: {detail} exceeds the cap of max_pixels={max_pixels} "
        "(possible decompression bomb; refused before decoding)"
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency onto white."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image.copy()
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in image.info
    ):
        # convert("RGBA") un-premultiplies RGBa/La and turns a palette or tRNS transparency into alpha.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode.startswith("I;16") or mode == "I" or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(image))).convert("RGB")
    # "1", "L", "P", "CMYK" (Pillow's JPEG decoder already undoes Adobe-inverted CMYK), "YCbCr", "HSV", ...
    # CMYK uses Pillow's naive formula; an embedded ICC profile is not applied.
    return image.convert("RGB")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Map a high-bit-depth grayscale array to uint8 without clipping.

    - 16-bit modes (I;16*): right-shift by 8, so 65535 -> 255 and the image keeps its absolute brightness (a
      12-bit sensor image stored in 16 bits looks dark, as it does in any viewer).
    - Mode "I" (int32): values already in 0..255 are kept; values in 0..65535 are treated as 16-bit data (older
      Pillow opened 16-bit PNGs as "I") and shifted like above; anything else (negative or > 65535) is rescaled
      linearly from its actual min..max range.
    - Mode "F" (float32): values in [0, 1] (the usual normalised convention) are scaled by 255; anything else
      (depth maps, HDR, arbitrary physical units) is rescaled from its actual min..max range, as a viewer would
      show it. NaN and infinities become 0.
    """
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:
        return (array.astype(np.uint16) >> 8).astype(np.uint8)
    values = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if array.dtype.kind == "f":
        if low >= 0.0 and high <= 1.0:
            values = values * 255.0
        elif high > low:
            values = (values - low) * (255.0 / (high - low))
    elif low >= 0.0 and high <= 255.0:
        pass
    elif low >= 0.0 and high <= 65535.0:
        return (values.astype(np.uint32) >> 8).astype(np.uint8)
    else:
        values = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _parse_data_url(url: str) -> tuple[str, bytes]:
    """Split ``data:[<mime>][;base64],<payload>`` into a display name and the decoded bytes."""
    header, comma, payload = url[5:].partition(",")
    mime = header.split(";")[0] or "text/plain"
    name = f"<data URL, {mime}, {len(url)} chars>"
    if not comma:
        raise MediaError(f"image {name}: malformed data URL (no ',' before the payload)")
    if header.lower().endswith(";base64"):
        data = _try_base64(payload)
        if data is None:
            raise MediaError(f"image {name}: payload is not valid base64")
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    return name, data


def _try_base64(text: str) -> bytes | None:
    """Strictly decode standard or URL-safe base64 (whitespace ignored); None if ``text`` is not base64."""
    compact = "".join(text.split())
    if not compact:
        return None
    if "-" in compact or "_" in compact:
        compact = compact.translate(str.maketrans("-_", "+/"))
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


# --------------------------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------------------------


def load_video(
    source: str | os.PathLike[str] | Sequence[MediaSource],
    *,
    num_frames: int = 8,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[Image.Image]:
    """Return up to ``num_frames`` RGB frames sampled uniformly from a video file or a sequence of images.

    Frame ``i`` of ``k`` is taken from the middle of the ``i``-th of ``k`` equal segments (index
    ``floor((i + 0.5) * n / k)``), so the frames are evenly spaced and fade-in/fade-out frames at the very ends are
    avoided. Shorter inputs give all their frames. ``max_pixels`` caps each frame. A sequence is sampled the same
    way, only the chosen items are decoded, and frames are resized to the first one's size if they differ.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if isinstance(source, (str, os.PathLike)):
        return _read_video_file(os.fspath(source), num_frames, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)) or not isinstance(source, Sequence):
        raise MediaError(f"video <{type(source).__name__}>: unsupported source (give a file path or a list of frames)")
    if len(source) == 0:
        raise MediaError("video <empty frame list>: no frames")
    frames = [load_image(source[i], max_pixels=max_pixels) for i in _sample_indices(len(source), num_frames)]
    # Video processors stack the frames of one video into one array, so they must share the first frame's size.
    size = frames[0].size
    return [frame if frame.size == size else frame.resize(size, Image.Resampling.BICUBIC) for frame in frames]


def _sample_indices(total: int, count: int) -> list[int]:
    count = min(count, total)
    return [((2 * i + 1) * total) // (2 * count) for i in range(count)]


def _read_video_file(path: str, num_frames: int, max_pixels: int) -> list[Image.Image]:
    try:
        import cv2  # lazy: OpenCV is the optional `video` extra
    except ImportError as exc:
        raise ImportError(
            "reading video files needs OpenCV; install the `video` extra: pip install 'critic-judge[video]'"
        ) from exc

    name = _name(path)
    if os.path.isdir(path):
        raise MediaError(f"video {name}: is a directory, not a video file")
    if not os.path.isfile(path):
        raise MediaError(f"video {name}: file not found")
    if os.path.getsize(path) == 0:
        raise MediaError(f"video {name}: empty file")

    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise MediaError(f"video {name}: cannot open (not a video file, or a codec this OpenCV lacks)")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > max_pixels:
            raise MediaError(f"video {name}: {width}x{height} frames exceed max_pixels={max_pixels}")
        declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()

    # CAP_PROP_FRAME_COUNT comes from container metadata and may be 0, negative or simply wrong. When it is
    # missing, count by grabbing (no frame is kept, so memory stays flat); when it overstates the length, the
    # first pass tells us the real count and we sample again from that.
    total = declared if declared > 0 else _count_frames(cv2, path)
    frames, seen = _grab_frames(cv2, path, _sample_indices(total, num_frames), name, max_pixels)
    if seen < total and len(frames) < min(num_frames, seen):
        frames, _ = _grab_frames(cv2, path, _sample_indices(seen, num_frames), name, max_pixels)
    if not frames:
        raise MediaError(f"video {name}: no decodable frames")
    return frames


def _count_frames(cv2, path: str) -> int:  # noqa: ANN001 - cv2 is imported lazily, so it has no type here
    capture = cv2.VideoCapture(path)
    count = 0
    try:
        while count < MAX_SEQUENTIAL_FRAMES and capture.grab():
            count += 1
    finally:
        capture.release()
    return count


def _grab_frames(
    cv2, path: str, indices: list[int], name: str, max_pixels: int  # noqa: ANN001
) -> tuple[list[Image.Image], int]:
    """Read sequentially, decoding only the frames at ``indices``; returns them and how many frames were seen.

    Sequential grab() is slower than seeking with CAP_PROP_POS_FRAMES, but seeking lands on the nearest keyframe
    with many codecs, which would return the wrong frames without any error.
    """
    wanted = set(indices)
    last = max(indices, default=-1)
    frames: list[Image.Image] = []
    capture = cv2.VideoCapture(path)
    seen = 0
    try:
        while seen <= last and capture.grab():
            if seen in wanted:
                ok, frame = capture.retrieve()
                if ok and frame is not None:
                    frames.append(_frame_to_image(cv2, frame, name, max_pixels))
            seen += 1
    finally:
        capture.release()
    return frames, seen


def _frame_to_image(cv2, frame: np.ndarray, name: str, max_pixels: int) -> Image.Image:  # noqa: ANN001
    height, width = frame.shape[:2]
    if width * height > max_pixels:
        raise MediaError(f"video {name}: {width}x{height} frames exceed max_pixels={max_pixels}")
    if frame.dtype != np.uint8:  # 16-bit streams: keep the top byte, as for 16-bit images
        frame = (frame.astype(np.uint16) >> 8).astype(np.uint8)
    if frame.ndim == 2:
        return Image.fromarray(frame).convert("RGB")
    # OpenCV hands out BGR (or BGRA); the model expects RGB.
    code = cv2.COLOR_BGRA2RGB if frame.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return Image.fromarray(cv2.cvtColor(frame, code))
