"""datasets_app.imaging: decoding, colour modes, buckets, crops, formats (pure Pillow)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from PIL import Image

from datasets_app import imaging


def _save(img: Image.Image, fmt: str, **kw) -> io.BytesIO:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    buf.seek(0)
    return buf


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # blue stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    out = imaging.open_image(_save(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)
    r, _, b = out.getpixel((10, 2))  # the left stripe is now at the top
    assert b > 200 and r < 60


def test_gif_first_frame_and_palette() -> None:
    frames = [Image.new("P", (16, 16), i) for i in (1, 2)]
    for f, colour in zip(frames, [(10, 200, 10), (200, 10, 10)], strict=True):
        f.putpalette([0, 0, 0, *colour, 0, 0, 255] + [0] * (256 * 3 - 9))
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    buf.seek(0)
    rgb = imaging.normalize_mode(imaging.open_image(buf))
    assert rgb.mode == "RGB"
    g = rgb.getpixel((5, 5))
    assert g[1] > 150 and g[0] < 60  # first (green) frame


def test_rgba_composited_on_background() -> None:
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0, 255))
    png = imaging.open_image(_save(img, "PNG"))
    white = imaging.normalize_mode(png)
    black = imaging.normalize_mode(png, background=(0, 0, 0))
    assert white.getpixel((5, 5)) == (255, 255, 255) and black.getpixel((5, 5)) == (0, 0, 0)
    assert white.getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["LA", "L", "1", "P"])
def test_other_modes_become_rgb(mode: str) -> None:
    img = Image.new(mode, (4, 4))
    assert imaging.normalize_mode(img).mode == "RGB"


def test_cmyk_jpeg() -> None:
    img = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    rgb = imaging.normalize_mode(imaging.open_image(_save(img, "JPEG", quality=95)))
    r, g, b = rgb.getpixel((4, 4))
    assert rgb.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_16bit_png_is_scaled_not_clipped() -> None:
    img = Image.new("I;16", (4, 4), 32768)
    loaded = imaging.open_image(_save(img, "PNG"))
    assert loaded.mode.startswith("I")
    value = imaging.normalize_mode(loaded).getpixel((1, 1))
    assert value[0] == value[1] == value[2] and 120 <= value[0] <= 135


def test_bucket_set_kohya_style() -> None:
    b = imaging.make_bucket_set(512)
    assert (512, 512) in b and (256, 1024) in b and (1024, 256) in b and (576, 448) in b
    for w, h in b:
        assert w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 and 256 <= min(w, h) and max(w, h) <= 1024
    # Maximal: no bucket fits inside another.
    assert not any(w2 >= w and h2 >= h and (w, h) != (w2, h2) for (w, h) in b for (w2, h2) in b)
    assert imaging.make_bucket_set(64) == [(64, 64)]
    small = imaging.make_bucket_set(64, min_side=32, step=16)
    assert (64, 64) in small and (32, 128) in small and len(small) > 3


def test_nearest_bucket() -> None:
    b = imaging.make_bucket_set(512)
    assert imaging.nearest_bucket(1000, 1000, b) == (512, 512)
    assert imaging.nearest_bucket(1920, 1080, b)[0] > imaging.nearest_bucket(1920, 1080, b)[1]
    assert imaging.nearest_bucket(100, 4000, b) == (256, 1024)
    # Tie on aspect ratio -> the larger area.
    assert imaging.nearest_bucket(10, 10, [(64, 64), (128, 128)]) == (128, 128)


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (64, 64), (1000, 37), (37, 1000)])
def test_resize_and_crop_exact_size(size: tuple[int, int]) -> None:
    img = Image.new("RGB", size, (0, 128, 0))
    out, (top, left) = imaging.resize_and_crop(img, 96, 64)
    assert out.size == (96, 64) and top >= 0 and left >= 0
    rnd, coords = imaging.resize_and_crop(img, 96, 64, crop="random", rng=random.Random(0))
    assert rnd.size == (96, 64)
    assert imaging.resize_and_crop(img, 96, 64, crop="random", rng=random.Random(0))[1] == coords


def test_center_crop_keeps_centre() -> None:
    img = Image.new("RGB", (300, 100), (0, 0, 0))
    img.paste((255, 255, 255), (100, 0, 200, 100))
    out, (top, left) = imaging.resize_and_crop(img, 64, 64)
    assert out.getpixel((32, 32)) == (255, 255, 255) and left > 0 and top == 0
    box = imaging.center_crop_box(300, 100, 64, 64)
    assert box == pytest.approx((100, 0, 200, 100), abs=1.0)


def test_crop_preview() -> None:
    p = imaging.crop_preview(1920, 1080, 512, bucketing=True)
    assert p["target_width"] > p["target_height"] and p["kept_fraction"] > 0.9
    sq = imaging.crop_preview(1920, 1080, 512, bucketing=False)
    assert (sq["target_width"], sq["target_height"]) == (512, 512)
    left, top, right, _ = sq["crop_box"]
    assert (right - left) == pytest.approx(1080, abs=2) and top == 0
    assert sq["kept_fraction"] == pytest.approx(1080 / 1920, abs=0.01)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WebP"])
def test_convert_format(fmt: str) -> None:
    img = Image.new("RGBA", (10, 10), (1, 2, 3, 128))
    data = imaging.convert_format(img, fmt)
    with Image.open(io.BytesIO(data)) as back:
        assert back.format == fmt.upper() and back.size == (10, 10)
    with pytest.raises(ValueError):
        imaging.convert_format(img, "BMP")


def test_thumbnail() -> None:
    thumb = imaging.make_thumbnail(Image.new("RGBA", (1000, 500)), size=256)
    assert thumb.size == (256, 128) and thumb.mode == "RGB"


def test_open_from_path(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.new("RGB", (5, 7)).save(path)
    assert imaging.open_image(path).size == (5, 7)


def test_module_is_pure() -> None:
    # Other tests may have imported Django into this process, so check the source itself.
    src = Path(imaging.__file__).read_text()
    assert "import django" not in src and "import torch" not in src
