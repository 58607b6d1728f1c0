"""Defensive media loading: every bad input is a clear MediaError, every odd mode a correct RGB image.

All files are generated inside ``tmp_path``; nothing binary is committed.
"""

from __future__ import annotations

import base64
import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from critic.media import DEFAULT_MAX_PIXELS, MediaError, image_to_data_url, load_image, load_video

RED = (255, 0, 0)


def _encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


def _bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of any declared size, built without ever holding its pixels in memory."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then packed bits
    rows_per_block = 64
    idat = b"".join(compressor.compress(row * rows_per_block) for _ in range(height // rows_per_block))
    idat += compressor.compress(row * (height % rows_per_block)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture()
def red_png(tmp_path: Path) -> Path:
    path = tmp_path / "red.png"
    Image.new("RGB", (8, 6), RED).save(path)
    return path


@pytest.fixture()
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any file-backed image is decoded."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def _assert_red(image: Image.Image) -> None:
    assert image.mode == "RGB" and image.size == (8, 6) and image.getpixel((0, 0)) == RED


# ---------------------------------------------------------------------------------------------- source kinds


def test_str_path(red_png: Path) -> None:
    _assert_red(load_image(str(red_png)))


def test_pathlib_path(red_png: Path) -> None:
    _assert_red(load_image(red_png))


def test_bytes(red_png: Path) -> None:
    _assert_red(load_image(red_png.read_bytes()))


def test_pil_image_is_copied_not_modified() -> None:
    original = Image.new("RGBA", (8, 6), (255, 0, 0, 255))
    out = load_image(original)
    _assert_red(out)
    assert out is not original and original.mode == "RGBA"


def test_lazily_opened_pil_image(red_png: Path) -> None:
    with Image.open(red_png) as lazy:
        _assert_red(load_image(lazy))


def test_data_url(red_png: Path) -> None:
    _assert_red(load_image("data:image/png;base64," + base64.b64encode(red_png.read_bytes()).decode()))


def test_plain_base64(red_png: Path) -> None:
    _assert_red(load_image(base64.b64encode(red_png.read_bytes()).decode()))


def test_long_plain_base64_is_not_mistaken_for_a_path() -> None:
    # Thousands of characters: too long for a file name, which must not turn into an OSError.
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    text = base64.b64encode(_encode(Image.fromarray(noise))).decode()
    assert len(text) > 1000
    assert np.array_equal(np.asarray(load_image(text)), noise)


def test_invalid_base64_data_url() -> None:
    with pytest.raises(MediaError, match="base64"):
        load_image("data:image/png;base64,@@@not-base64@@@")


def test_unsupported_source_type() -> None:
    with pytest.raises(MediaError, match="unsupported source type"):
        load_image(12345)  # type: ignore[arg-type]


def test_image_to_data_url_round_trip(red_png: Path) -> None:
    url = image_to_data_url(load_image(red_png))
    assert url.startswith("data:image/png;base64,")
    _assert_red(load_image(url))


def test_image_to_data_url_jpeg_from_rgba() -> None:
    url = image_to_data_url(Image.new("RGBA", (8, 8), (255, 0, 0, 255)), format="jpg")
    assert url.startswith("data:image/jpeg;base64,")
    assert _close(load_image(url).getpixel((4, 4)), RED)


# ---------------------------------------------------------------------------------------------- bombs


def test_bomb_above_pillows_limit_is_refused_without_decoding(tmp_path: Path, no_decoding: None) -> None:
    before = Image.MAX_IMAGE_PIXELS
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_bilevel_png(20_000, 20_000))  # 400 megapixels
    assert bomb.stat().st_size < 200_000
    with pytest.raises(MediaError, match=f"max_pixels={DEFAULT_MAX_PIXELS}.*decompression bomb"):
        load_image(bomb)
    assert Image.MAX_IMAGE_PIXELS == before


def test_bomb_above_our_cap_but_below_pillows_is_refused(tmp_path: Path, no_decoding: None) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_bilevel_png(9000, 9000))  # 81 megapixels: Pillow alone would decode it without a word
    with pytest.raises(MediaError, match="9000x9000 = 81000000 pixels exceeds the cap"):
        load_image(bomb)


def test_pillows_bomb_warning_is_an_error_even_with_a_high_cap(no_decoding: None) -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(MediaError, match="decompression bomb"):
        load_image(_bilevel_png(10_000, 10_000), max_pixels=10**12)
    assert Image.MAX_IMAGE_PIXELS == before


def test_small_cap_applies_to_pil_images() -> None:
    with pytest.raises(MediaError, match="exceeds the cap of max_pixels=100"):
        load_image(Image.new("RGB", (20, 20)), max_pixels=100)


# ---------------------------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path: Path, fmt: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"'.*cut\.\w+': truncated or corrupt"):
        load_image(path)


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "fake.png"
    path.write_text("hello, I am text")
    with pytest.raises(MediaError, match="not a recognised image format"):
        load_image(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        load_image(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="nope.png'?: file not found"):
        load_image(str(tmp_path / "nope.png"))
    with pytest.raises(MediaError, match="'cat1': file not found"):
        load_image("cat1")  # valid base64 too, but far too short to be an image


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="directory"):
        load_image(tmp_path)


# ---------------------------------------------------------------------------------------------- modes


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    assert Image.open(path).mode == "CMYK"
    assert _close(load_image(path).getpixel((8, 8)), RED)


def test_sixteen_bit_png_gradient_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    gradient = np.linspace(0, 65535, 256).astype(np.uint16).reshape(1, 256).repeat(4, axis=0)
    Image.fromarray(gradient).save(path)
    assert Image.open(path).mode.startswith("I")
    array = np.asarray(load_image(path))[..., 0]
    assert array.max() == 255 and array.min() == 0
    assert len(np.unique(array)) > 200  # a real gradient, not a wall of 255s
    assert abs(int(array[0, 128]) - 128) <= 2


def test_sixteen_bit_big_endian() -> None:
    image = Image.fromarray(np.array([[0, 32768, 65535]], dtype=">u2"))
    assert image.mode == "I;16B"
    assert np.asarray(load_image(image))[0, :, 0].tolist() == [0, 128, 255]


def test_int32_mode_i() -> None:
    sixteen = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.int32))
    assert sixteen.mode == "I"
    assert np.asarray(load_image(sixteen))[0, :, 0].tolist() == [0, 128, 255]
    signed = Image.fromarray(np.array([[-1000, 0, 1000]], dtype=np.int32))
    assert np.asarray(load_image(signed))[0, :, 0].tolist() == [0, 128, 255]  # scaled by its own range


def test_float_mode_f() -> None:
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert unit.mode == "F"
    assert np.asarray(load_image(unit))[0, :, 0].tolist() == [0, 128, 255]
    wide = Image.fromarray(np.array([[-2.0, 0.0, 2.0, np.nan]], dtype=np.float32))
    assert np.asarray(load_image(wide))[0, :, 0].tolist() == [0, 128, 255, 128]  # own range; NaN counts as 0
    positive = Image.fromarray(np.array([[0.0, 0.5, 1.0, 2.0]], dtype=np.float32))
    assert np.asarray(load_image(positive))[0, :, 0].tolist() == [0, 64, 128, 255]


def test_rgba_transparent_pixel_becomes_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    out = load_image(_encode(rgba))
    assert out.getpixel((2, 2)) == (255, 255, 255) and out.getpixel((0, 0)) == (0, 0, 255)
    assert _close(out.getpixel((1, 0)), (127, 127, 127), tolerance=2)  # half-transparent black is grey


def test_palette_with_transparency(tmp_path: Path) -> None:
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 255, 0, 255, 0, 0] + [0, 0, 0] * 254)
    palette.putpixel((0, 0), 1)
    path = tmp_path / "pal.png"
    palette.save(path, transparency=0)
    out = load_image(path)
    assert out.getpixel((2, 2)) == (255, 255, 255) and out.getpixel((0, 0)) == RED


def test_palette_without_transparency() -> None:
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 255, 0] + [0, 0, 0] * 255)
    assert load_image(_encode(palette)).getpixel((2, 2)) == (0, 255, 0)


def test_la_and_pa() -> None:
    assert load_image(_encode(Image.new("LA", (2, 2), (0, 0)))).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(Image.new("LA", (2, 2), (0, 255))).getpixel((0, 0)) == (0, 0, 0)
    pa = Image.new("PA", (2, 2), (1, 0))
    pa.putpalette([0, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    pa.putpixel((0, 0), (1, 255))
    out = load_image(pa)
    assert out.getpixel((1, 1)) == (255, 255, 255) and out.getpixel((0, 0)) == (0, 0, 255)


def test_bilevel_and_grayscale() -> None:
    assert load_image(_encode(Image.new("1", (3, 3), 1))).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(_encode(Image.new("L", (3, 3), 128))).getpixel((0, 0)) == (128, 128, 128)


def test_exif_orientation(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste(RED, (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    stored.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (20, 40)
    assert _close(out.getpixel((10, 5)), RED) and _close(out.getpixel((10, 35)), (0, 0, 255))


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), colour) for colour in [RED, (0, 0, 255)]]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(path).n_frames == 2
    assert _close(load_image(path).getpixel((4, 4)), RED)


# ---------------------------------------------------------------------------------------------- videos

STEP = 8  # frame k's left half is gray level STEP * k: luma is coded finely enough for the index to survive


def _write_video(tmp_path: Path, count: int) -> Path:
    """Write ``count`` 64x64 frames with the first codec this OpenCV build can encode."""
    cv2 = pytest.importorskip("cv2")
    for fourcc, suffix in (("mp4v", ".mp4"), ("MJPG", ".avi")):
        path = tmp_path / f"clip{suffix}"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (64, 64))
        if not writer.isOpened():
            continue
        for k in range(count):
            frame = np.full((64, 64, 3), STEP * k, dtype=np.uint8)
            frame[:, 32:] = (0, 0, 255)  # right half pure red, written as BGR
            writer.write(frame)
        writer.release()
        if path.stat().st_size > 0:
            return path
    pytest.skip("this OpenCV build can encode neither mp4v nor MJPG")


def _indices(frames: list[Image.Image]) -> list[int]:
    return [round(frame.getpixel((16, 32))[1] / STEP) for frame in frames]


def test_video_is_sampled_uniformly(tmp_path: Path) -> None:
    frames = load_video(_write_video(tmp_path, 30), num_frames=5)
    assert len(frames) == 5 and all(f.mode == "RGB" and f.size == (64, 64) for f in frames)
    assert all(_close(f.getpixel((48, 32)), RED) for f in frames)  # red stayed red: BGR was converted
    assert _indices(frames) == [3, 9, 15, 21, 27]


def test_short_video_gives_all_frames(tmp_path: Path) -> None:
    frames = load_video(_write_video(tmp_path, 4), num_frames=8)
    assert _indices(frames) == [0, 1, 2, 3]


@pytest.mark.parametrize("declared", [0, -1, 1000])
def test_video_with_wrong_frame_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, declared: int) -> None:
    cv2 = pytest.importorskip("cv2")
    path = _write_video(tmp_path, 30)
    real = cv2.VideoCapture

    class LyingCapture:
        def __init__(self, *args: object) -> None:
            self._inner = real(*args)

        def get(self, prop: int) -> float:
            return float(declared) if prop == cv2.CAP_PROP_FRAME_COUNT else self._inner.get(prop)

        def __getattr__(self, attr: str) -> object:
            return getattr(self._inner, attr)

    monkeypatch.setattr(cv2, "VideoCapture", LyingCapture)
    assert _indices(load_video(path, num_frames=5)) == [3, 9, 15, 21, 27]


def test_garbage_video_file(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    path = tmp_path / "garbage.mp4"
    path.write_bytes(b"\x00not a video at all" * 100)
    with pytest.raises(MediaError, match="video '.*garbage.mp4'"):
        load_video(path)


def test_missing_video_file(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    with pytest.raises(MediaError, match="file not found"):
        load_video(tmp_path / "missing.mp4")


def test_video_without_opencv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    with pytest.raises(ImportError, match=r"video.*extra"):
        load_video(tmp_path / "clip.mp4")


def test_video_from_list_of_frames(red_png: Path) -> None:
    sources = [Image.new("RGB", (8, 6), (STEP * k, 0, 0)) for k in range(10)]
    frames = load_video(sources, num_frames=4)
    assert [frame.getpixel((0, 0))[0] // STEP for frame in frames] == [1, 3, 6, 8]
    mixed = load_video([red_png, Image.new("RGB", (16, 12), RED)], num_frames=4)
    assert [frame.size for frame in mixed] == [(8, 6), (8, 6)]  # stacked by processors: one size


def test_empty_list_of_frames() -> None:
    with pytest.raises(MediaError, match="no frames"):
        load_video([])


def test_bad_frame_in_list_names_it(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="gone.png"):
        load_video([tmp_path / "gone.png"])
