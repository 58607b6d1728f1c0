"""Defensive media loading: every bad input is a clear MediaError, every odd mode a correct RGB image."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from critic.media import MediaError, image_to_data_url, load_image, load_video


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture()
def red_png(tmp_path: Path) -> Path:
    path = tmp_path / "red.png"
    Image.new("RGB", (8, 6), (255, 0, 0)).save(path)
    return path


def test_every_source_kind(red_png: Path) -> None:
    data = red_png.read_bytes()
    sources = [str(red_png), red_png, data, Image.open(red_png), "data:image/png;base64," + base64.b64encode(data).decode(),
               base64.b64encode(data).decode()]
    for source in sources:
        image = load_image(source)
        assert image.mode == "RGB" and image.size == (8, 6) and image.getpixel((0, 0)) == (255, 0, 0)
    assert load_image(image_to_data_url(load_image(red_png))).getpixel((1, 1)) == (255, 0, 0)


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    bomb = tmp_path / "bomb.png"
    Image.new("1", (8500, 8500)).save(bomb)  # 72 megapixels in a few KB: above our cap, below Pillow's
    assert bomb.stat().st_size < 200_000
    with pytest.raises(MediaError, match="exceeds the cap"):
        load_image(bomb)
    huge = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(huge)  # 400 megapixels: Pillow's own check fires, as a MediaError
    with pytest.raises(MediaError, match="decompression bomb"):
        load_image(huge, max_pixels=10**12)
    assert Image.MAX_IMAGE_PIXELS == before


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, format=fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(MediaError, match="truncated or corrupt"):
        load_image(path)


@pytest.mark.parametrize(("content", "reason"), [(b"hello, I am text", "not a recognised"), (b"", "empty")])
def test_non_images_and_empty_files(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "fake.png"
    path.write_bytes(content)
    with pytest.raises(MediaError, match=reason):
        load_image(path)


def test_missing_file_and_bad_base64(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(MediaError, match="base64"):
        load_image("data:image/png;base64,@@@not-base64@@@")
    with pytest.raises(MediaError):
        load_image(12345)  # type: ignore[arg-type]


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    r, g, b = load_image(path).getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_sixteen_bit_gradient_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    gradient = np.linspace(0, 65535, 256, dtype=np.uint16).reshape(1, 256).repeat(4, axis=0)
    Image.fromarray(gradient).save(path)
    assert Image.open(path).mode.startswith("I")
    array = np.asarray(load_image(path))[..., 0]
    assert array.max() == 255 and array.min() == 0
    assert len(np.unique(array)) > 200  # a real gradient, not a wall of 255s


def test_transparency_is_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    out = load_image(_png_bytes(rgba))
    assert out.getpixel((1, 1)) == (255, 255, 255) and out.getpixel((0, 0)) == (0, 0, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 255, 0] + [0, 0, 0] * 255)
    palette.info["transparency"] = 0
    path = tmp_path / "pal.png"
    palette.save(path, transparency=0)
    assert load_image(path).getpixel((2, 2)) == (255, 255, 255)
    opaque = Image.new("P", (4, 4), 0)
    opaque.putpalette([0, 255, 0] + [0, 0, 0] * 255)
    assert load_image(_png_bytes(opaque)).getpixel((2, 2)) == (0, 255, 0)
    la = Image.new("LA", (2, 2), (0, 0))
    assert load_image(_png_bytes(la)).getpixel((0, 0)) == (255, 255, 255)


def test_other_modes(tmp_path: Path) -> None:
    assert load_image(_png_bytes(Image.new("1", (3, 3), 1))).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(_png_bytes(Image.new("L", (3, 3), 128))).getpixel((0, 0)) == (128, 128, 128)
    floats = Image.fromarray(np.array([[0.0, 0.5], [1.0, 2.0]], dtype=np.float32), "F")
    assert np.asarray(load_image(floats))[..., 0].tolist() == [[0, 64], [128, 255]]


def test_exif_orientation(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    Image.new("RGB", (40, 20), "white").save(path, exif=exif)
    assert load_image(path).size == (20, 40)


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    r, g, b = load_image(path).getpixel((4, 4))
    assert r > 200 and b < 60


def _write_video(path: Path, n: int) -> None:
    cv2 = pytest.importorskip("cv2")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    assert writer.isOpened()
    for k in range(n):
        writer.write(np.full((32, 32, 3), (0, 0, k * 8), dtype=np.uint8))  # BGR: red channel = 8 × index
    writer.release()


def test_video_is_sampled_uniformly(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    _write_video(path, 30)
    frames = load_video(path, num_frames=5)
    assert len(frames) == 5 and all(f.mode == "RGB" for f in frames)
    indices = [round(f.getpixel((16, 16))[0] / 8) for f in frames]
    assert indices == [3, 9, 15, 21, 27]
    assert len(load_video(path, num_frames=100)) == 30


def test_broken_videos(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video at all" * 100)
    with pytest.raises(MediaError, match="video"):
        load_video(garbage)
    with pytest.raises(MediaError, match="not found"):
        load_video(tmp_path / "missing.mp4")
    with pytest.raises(MediaError, match="empty"):
        load_video([])


def test_video_from_frames(red_png: Path) -> None:
    frames = load_video([red_png] * 10, num_frames=4)
    assert len(frames) == 4 and frames[0].getpixel((0, 0)) == (255, 0, 0)
