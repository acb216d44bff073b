"""Real image files of every kind the datasets tests need, drawn with Pillow, and upload helpers."""

from __future__ import annotations

import io
import zipfile
from functools import cache

import pytest
from django.test.client import MULTIPART_CONTENT
from PIL import Image, ImageDraw

from datasets_app.models import Dataset


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 48), color=(200, 30, 30), seed: int = 0,
                mode: str = "RGB", **save) -> bytes:
    """A small picture with a shape whose position depends on `seed`, so different seeds differ."""
    img = Image.new(mode, size, color if mode != "L" else 128)
    draw = ImageDraw.Draw(img)
    x = (seed * 7) % max(1, size[0] - 10)
    draw.rectangle([x, 5, x + size[0] // 3, size[1] - 5], fill=(20, 20 + seed % 200, 220) if mode != "L" else 0)
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def distinct_images(n: int, fmt: str = "PNG", size=(64, 48)) -> list[bytes]:
    """`n` images that are far apart perceptually (no near-duplicate flags between them)."""
    out = []
    for i in range(n):
        img = Image.new("RGB", size, (0, 0, 0))
        draw = ImageDraw.Draw(img)
        # A distinct pattern of bright cells per image: a checker whose phase and period vary.
        for cx in range(0, size[0], 4):
            for cy in range(0, size[1], 4):
                if ((cx // 4) * (i + 1) + (cy // 4) * (i // 3 + 2)) % (i % 5 + 2) == 0:
                    draw.rectangle([cx, cy, cx + 3, cy + 3], fill=(255, 255 - i * 3 % 255, i * 11 % 255))
        buffer = io.BytesIO()
        img.save(buffer, format=fmt)
        out.append(buffer.getvalue())
    return out


def zip_bytes(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def named(data: bytes, name: str) -> io.BytesIO:
    handle = io.BytesIO(data)
    handle.name = name
    return handle


@cache
def bomb_png() -> bytes:
    """A real decompression bomb: 9000×9000 = 81 megapixels (over the 64 MP limit) in a few kB."""
    buffer = io.BytesIO()
    Image.new("1", (9000, 9000), 0).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Each test gets its own MEDIA_ROOT, so file assertions see only that test's files."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def dataset(team_a, member):
    return Dataset.objects.create(team=team_a, name="faces", trigger_word="ohwx", created_by=member)


@pytest.fixture
def other_dataset(team_b, outsider):
    return Dataset.objects.create(team=team_b, name="bravo-set", created_by=outsider)


@pytest.fixture
def upload(api_for):
    """POST files to a dataset through the API as `user`; returns (status, json)."""

    def post(user, dataset, files: dict[str, bytes] | list[tuple[str, bytes]]):
        items = files.items() if isinstance(files, dict) else files
        client = api_for(user)
        response = client.post(f"/api/datasets/{dataset.uuid}/images",
                               {"files": [named(data, name) for name, data in items]},
                               content_type=MULTIPART_CONTENT)
        return response.status_code, response.json()

    return post
