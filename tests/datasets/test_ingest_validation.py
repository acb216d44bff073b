"""Every file is judged by its content; each rejection reason, with a real file of that kind."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings
from PIL import Image

from datasets_app.models import Caption, DatasetImage, StoredBlob
from tests.datasets.conftest import bomb_png, distinct_images, image_bytes, zip_bytes


def media_files() -> set[str]:
    root = Path(settings.MEDIA_ROOT)
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def reasons(report) -> dict[str, str]:
    return {r["name"]: r["reason"] for r in report["rejected"]}


@pytest.mark.parametrize("fmt,save", [("PNG", {}), ("JPEG", {}), ("WEBP", {}), ("BMP", {}), ("GIF", {}),
                                      ("TIFF", {})])
def test_each_accepted_format_is_stored_with_its_true_format(dataset, member, upload, fmt, save):
    status, report = upload(member, dataset, {f"picture.{fmt.lower()}": image_bytes(fmt, **save)})
    assert status == 200, report
    assert report["rejected"] == [] and len(report["added"]) == 1
    assert report["added"][0]["format"] == fmt
    image = DatasetImage.objects.get()
    assert (image.width, image.height) == (64, 48)
    assert image.blob.file.name.startswith(f"blobs/{image.sha256[:2]}/{image.sha256}.")


def test_format_comes_from_content_not_from_the_file_name(dataset, member, upload):
    _status, report = upload(member, dataset, {"really-a-jpeg.png": image_bytes("JPEG")})
    assert report["added"][0]["format"] == "JPEG"
    assert DatasetImage.objects.get().blob.file.name.endswith(".jpg")


def test_text_file_named_like_an_image_is_rejected(dataset, member, upload):
    _, report = upload(member, dataset, {"notes.png": b"hello, I am not a picture\n" * 10})
    assert "not a PNG, JPEG, WebP, BMP, GIF or TIFF image" in reasons(report)["notes.png"]


def test_image_format_we_do_not_accept_is_rejected(dataset, member, upload):
    _, report = upload(member, dataset, {"icon.png": image_bytes("ICO", size=(32, 32))})
    assert "not a PNG, JPEG, WebP, BMP, GIF or TIFF image" in reasons(report)["icon.png"]


def test_zero_byte_file_is_rejected(dataset, member, upload):
    _, report = upload(member, dataset, {"empty.jpg": b""})
    assert reasons(report)["empty.jpg"] == "empty file (0 bytes)"


def test_truncated_jpeg_is_rejected(dataset, member, upload):
    data = image_bytes("JPEG", size=(256, 256))
    _, report = upload(member, dataset, {"cut.jpg": data[: len(data) // 2]})
    assert reasons(report)["cut.jpg"] == "truncated or corrupt JPEG data"


def test_corrupt_png_is_rejected(dataset, member, upload):
    data = bytearray(image_bytes("PNG", size=(128, 128)))
    start = data.index(b"IDAT") + 10
    data[start:start + 20] = bytes(20)  # damage the compressed pixels; the chunk CRC no longer matches
    _, report = upload(member, dataset, {"broken.png": bytes(data)})
    assert reasons(report)["broken.png"] == "truncated or corrupt PNG data"


def test_decompression_bomb_is_rejected_before_decoding(dataset, member, upload):
    _, report = upload(member, dataset, {"bomb.png": bomb_png()})
    reason = reasons(report)["bomb.png"]
    assert "9000×9000 (81.0 megapixels); the limit is 64 megapixels" in reason
    assert "decompression bomb" in reason


@override_settings(DATASET_MAX_FILE_BYTES=10_000)
def test_oversize_file_is_rejected_with_the_limit(dataset, member, upload):
    big = image_bytes("BMP", size=(100, 100))  # 30 kB
    _, report = upload(member, dataset, {"big.bmp": big, "small.png": image_bytes("PNG", size=(16, 16))})
    assert reasons(report)["big.bmp"].startswith("file is 29.3 KiB; the limit is 9.8 KiB")
    assert [a["name"] for a in report["added"]] == ["small.png"]


def test_zip_members_with_absolute_paths_or_dotdot_or_symlinks_are_rejected(dataset, member, upload):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("good.png", image_bytes(seed=1))
        archive.writestr("../escape.png", image_bytes(seed=2))
        archive.writestr("/etc/absolute.png", image_bytes(seed=3))
        archive.writestr("a/../../b.png", image_bytes(seed=4))
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (0o120777 << 16)
        archive.writestr(link, "/etc/passwd")
    _, report = upload(member, dataset, {"pack.zip": buffer.getvalue()})
    found = reasons(report)
    assert found["pack.zip/../escape.png"] == "path with '..' in archive; member skipped"
    assert found["pack.zip/a/../../b.png"] == "path with '..' in archive; member skipped"
    assert found["pack.zip//etc/absolute.png"] == "absolute path in archive; member skipped"
    assert found["pack.zip/link.png"] == "symbolic link in archive; member skipped"
    assert [a["name"] for a in report["added"]] == ["pack.zip/good.png"]
    assert not any("escape" in f or "etc" in f for f in media_files())


def test_nested_archive_is_rejected(dataset, member, upload):
    inner = zip_bytes({"x.png": image_bytes()})
    _, report = upload(member, dataset, {"outer.zip": zip_bytes({"inner.zip": inner, "ok.png": image_bytes(seed=9)})})
    assert "nested archives are not accepted" in reasons(report)["outer.zip/inner.zip"]
    assert len(report["added"]) == 1


def test_other_archive_kinds_are_rejected_at_the_top_level(dataset, member, upload):
    import gzip

    _, report = upload(member, dataset, {"pics.tar.gz": gzip.compress(b"x" * 1000)})
    assert reasons(report)["pics.tar.gz"] == "gzip archives are not accepted; use zip"


@override_settings(DATASET_MAX_ARCHIVE_TOTAL_BYTES=20 * 1024 * 1024)
def test_zip_bomb_by_total_unpacked_size_is_rejected_whole(dataset, member, upload):
    bomb = zip_bytes({"a.png": image_bytes(), "zeros.bmp": bytes(30 * 1024 * 1024)})
    assert len(bomb) < 100_000
    _, report = upload(member, dataset, {"bomb.zip": bomb})
    assert "would unpack to 30.0 MiB; the limit is 20.0 MiB (zip bomb protection)" in reasons(report)["bomb.zip"]
    assert report["added"] == [] and DatasetImage.objects.count() == 0


@override_settings(DATASET_MAX_ARCHIVE_MEMBERS=3)
def test_zip_with_too_many_members_is_rejected_whole(dataset, member, upload):
    archive = zip_bytes({f"{i}.png": image_bytes(seed=i) for i in range(5)})
    _, report = upload(member, dataset, {"many.zip": archive})
    assert reasons(report)["many.zip"] == "archive has 5 members; the limit is 3"
    assert DatasetImage.objects.count() == 0


def test_zip_member_with_a_bomb_compression_ratio_is_rejected(dataset, member, upload):
    archive = zip_bytes({"flat.bmp": bytes(5 * 1024 * 1024), "ok.png": image_bytes()})
    _, report = upload(member, dataset, {"ratio.zip": archive})
    assert "the limit is 200:1 (zip bomb protection)" in reasons(report)["ratio.zip/flat.bmp"]
    assert len(report["added"]) == 1


def test_corrupt_zip_is_rejected(dataset, member, upload):
    archive = zip_bytes({"a.png": image_bytes(), "b.png": image_bytes(seed=3)})
    _, report = upload(member, dataset, {"cut.zip": archive[:-30]})
    assert reasons(report)["cut.zip"] == "not a readable zip archive (corrupt or truncated)"


def test_one_bad_file_never_sinks_the_rest_and_leaves_nothing_behind(dataset, member, upload):
    good = distinct_images(3)
    files = [("a.png", good[0]), ("bad.jpg", b"\xff\xd8\xff garbage"), ("b.png", good[1]),
             ("empty.gif", b""), ("c.webp", image_bytes("WEBP", seed=40))]
    before = media_files()
    _, report = upload(member, dataset, files)
    assert sorted(a["name"] for a in report["added"]) == ["a.png", "b.png", "c.webp"]
    assert sorted(reasons(report)) == ["bad.jpg", "empty.gif"]
    # Exactly one original and one thumbnail per stored image: nothing from the bad files.
    assert len(media_files() - before) == 2 * 3
    assert not any(".incoming-" in f for f in media_files())
    assert StoredBlob.objects.count() == 3


def test_a_failure_while_storing_leaves_no_row_and_no_file(dataset, member, upload, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Caption.objects, "bulk_create", explode)
    _, report = upload(member, dataset, {"x.png": image_bytes(), "x.txt": b"a caption"})
    assert reasons(report)["x.png"] == "unexpected error while reading this file"
    assert DatasetImage.objects.count() == 0 and StoredBlob.objects.count() == 0
    assert not any(f.startswith("blobs/") for f in media_files())


def test_animated_gif_keeps_its_first_frame(dataset, member, upload):
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    _, report = upload(member, dataset, {"anim.gif": buffer.getvalue()})
    assert report["added"][0]["format"] == "GIF"
    thumb = Image.open(DatasetImage.objects.get().blob.thumbnail.path)
    r, _g, b = thumb.convert("RGB").getpixel((5, 5))
    assert r > 200 and b < 60


def test_exif_orientation_is_applied_to_the_recorded_size(dataset, member, upload):
    img = Image.new("RGB", (60, 20), (10, 200, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° when shown
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", exif=exif)
    _, report = upload(member, dataset, {"phone.jpg": buffer.getvalue()})
    assert (report["added"][0]["width"], report["added"][0]["height"]) == (20, 60)


def test_a_failing_file_in_a_batch_fails_alone(dataset, member, upload, monkeypatch):
    real = Caption.objects.bulk_create

    def picky(objs, *args, **kwargs):
        if any(c.text == "boom" for c in objs):
            raise RuntimeError("this caption breaks the database")
        return real(objs, *args, **kwargs)

    monkeypatch.setattr(Caption.objects, "bulk_create", picky)
    a, b, c = distinct_images(3)
    _, report = upload(member, dataset, {"a.png": a, "a.txt": b"fine", "b.png": b, "b.txt": b"boom", "c.png": c})
    assert sorted(x["name"] for x in report["added"]) == ["a.png", "c.png"]
    assert reasons(report) == {"b.png": "unexpected error while reading this file"}
    assert StoredBlob.objects.count() == 2
    assert len([f for f in media_files() if f.startswith("blobs/")]) == 4


def test_parallel_large_decodes_stay_within_the_pixel_budget():
    import threading

    from datasets_app.validation import DECODES, Limits, inspect_image

    big = io.BytesIO()
    Image.new("RGB", (3000, 2000), (200, 30, 30)).save(big, format="PNG")
    data = big.getvalue()
    limits = Limits(decode_budget_pixels=7_000_000)  # room for one 6 MP image at a time, not two
    DECODES.peak = 0
    results = []
    threads = [threading.Thread(target=lambda: results.append(inspect_image(data, limits))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and all(r.width == 3000 for r in results)
    assert DECODES.peak == 6_000_000


def test_an_image_larger_than_the_whole_budget_still_decodes_alone():
    from datasets_app.validation import DECODES, Limits, inspect_image

    big = io.BytesIO()
    Image.new("RGB", (3000, 2000)).save(big, format="PNG")
    DECODES.peak = 0
    assert inspect_image(big.getvalue(), Limits(decode_budget_pixels=1_000_000)).height == 2000
    assert DECODES.peak == 6_000_000
