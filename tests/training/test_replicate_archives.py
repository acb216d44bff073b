"""The dataset zip we send to Replicate and the weights tar we take back (crafted hostile tars included)."""

from __future__ import annotations

import csv
import io
import json
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import save as save_safetensors

from training_app.backends.replicate_archives import (
    ArchiveError,
    ArchiveLimits,
    check_safetensors,
    extract_lora,
    zip_dataset,
)


def lora_bytes(rank: int = 4) -> bytes:
    return save_safetensors({"unet.a.lora_A.weight": np.ones((rank, 8), dtype=np.float32),
                             "unet.a.lora_B.weight": np.zeros((8, rank), dtype=np.float16)}, {"format": "pt"})


def build_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
    return path


def special(name: str, kind: bytes, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A folder with an `out` target inside: anything written next to `out` is an escape."""
    (tmp_path / "out").mkdir()
    return tmp_path


def written_outside(workdir: Path) -> list[str]:
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")
                  if not p.is_relative_to(workdir / "out") and p.suffix != ".tar")


def image(folder: Path, name: str, colour=(200, 30, 30)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.new("RGB", (16, 16), colour).save(path)
    return path


# -- the dataset zip ------------------------------------------------------------------------------------
def test_same_dataset_gives_the_same_zip_bytes(tmp_path):
    items = [(image(tmp_path, "a.png"), "TOK one"), (image(tmp_path, "b.jpg"), "TOK two")]
    first = zip_dataset(items, tmp_path / "1.zip")
    second = zip_dataset(items, tmp_path / "2.zip")
    assert first.sha256 == second.sha256
    assert (tmp_path / "1.zip").read_bytes() == (tmp_path / "2.zip").read_bytes()


def test_images_with_the_same_name_in_two_folders_keep_their_own_captions(tmp_path):
    items = [(image(tmp_path / "x", "cat.png"), "TOK black cat"), (image(tmp_path / "y", "cat.png", (1, 2, 3)), "TOK white cat")]
    archive = zip_dataset(items, tmp_path / "d.zip")
    with zipfile.ZipFile(archive.path) as z:
        assert z.read("0001_cat.txt") == b"TOK black cat" and z.read("0002_cat.txt") == b"TOK white cat"
    assert archive.names == ("0001_cat.png", "0002_cat.png")


def test_names_inside_the_zip_are_plain_ascii_without_folders(tmp_path):
    items = [(image(tmp_path, "étrange nom (1).PNG"), "x")]
    with zipfile.ZipFile(zip_dataset(items, tmp_path / "d.zip").path) as z:
        assert z.namelist() == ["0001_trange_nom_1.png", "0001_trange_nom_1.txt"]


def test_an_image_without_caption_gets_no_txt_file(tmp_path):
    archive = zip_dataset([(image(tmp_path, "a.png"), "   "), (image(tmp_path, "b.png"), "TOK b")], tmp_path / "d.zip")
    with zipfile.ZipFile(archive.path) as z:
        assert z.namelist() == ["0001_a.png", "0002_b.png", "0002_b.txt"]
    assert (archive.image_count, archive.captioned_count) == (2, 1)


def test_caption_csv_lists_every_image_with_its_caption(tmp_path):
    items = [(image(tmp_path, "a.png"), 'TOK, "quoted", a'), (image(tmp_path, "b.png"), "TOK b")]
    with zipfile.ZipFile(zip_dataset(items, tmp_path / "d.zip", caption_csv=True).path) as z:
        rows = list(csv.reader(io.StringIO(z.read("caption.csv").decode())))
    assert rows == [["image_file", "caption"], ["0001_a.png", 'TOK, "quoted", a'], ["0002_b.png", "TOK b"]]


def test_caption_csv_needs_a_caption_for_every_image(tmp_path):
    with pytest.raises(ArchiveError, match="every image needs a caption"):
        zip_dataset([(image(tmp_path, "a.png"), "")], tmp_path / "d.zip", caption_csv=True)


@pytest.mark.parametrize(("name", "message"), [("notes.gif", "images only"), ("missing.png", "missing")])
def test_a_file_the_trainer_cannot_read_is_refused_by_name(tmp_path, name, message):
    path = tmp_path / name
    if name != "missing.png":
        path.write_bytes(b"GIF89a")
    with pytest.raises(ArchiveError, match=message) as caught:
        zip_dataset([(path, "x")], tmp_path / "d.zip")
    assert name in str(caught.value)


def test_a_dataset_over_the_size_limit_is_refused(tmp_path):
    with pytest.raises(ArchiveError, match="uploads at most"):
        zip_dataset([(image(tmp_path, "a.png"), "x")], tmp_path / "d.zip", max_bytes=10)


# -- the weights tar: what is accepted -----------------------------------------------------------------
def test_lora_nested_in_the_flux_layout_is_written_alone_and_loads(workdir):
    tar = build_tar(workdir / "w.tar", [("output/flux_train_replicate/lora.safetensors", lora_bytes(4)),
                                        ("output/flux_train_replicate/config.yaml", b"job: x"),
                                        ("output/flux_train_replicate/captions/a.txt", b"TOK")])
    weights = extract_lora(tar, workdir / "out")
    assert [p.name for p in (workdir / "out").iterdir()] == ["lora.safetensors"]
    assert weights.tensors == {"unet.a.lora_A.weight": [4, 8], "unet.a.lora_B.weight": [8, 4]}
    with safe_open(str(weights.lora_path), framework="np") as lora:
        assert lora.get_tensor("unet.a.lora_A.weight").sum() == 32 and lora.metadata() == {"format": "pt"}
    assert written_outside(workdir) == []


def test_gzipped_tar_with_a_single_differently_named_safetensors_is_accepted(workdir):
    tar = build_tar(workdir / "w.tar", [("weights/my_lora.safetensors", lora_bytes())], mode="w:gz")
    assert extract_lora(tar, workdir / "out").lora_path == workdir / "out" / "lora.safetensors"


def test_lora_safetensors_is_chosen_among_other_safetensors(workdir):
    tar = build_tar(workdir / "w.tar", [("embeddings.safetensors", lora_bytes()), ("lora.safetensors", lora_bytes(2))])
    assert extract_lora(tar, workdir / "out").tensors["unet.a.lora_A.weight"] == [2, 8]


# -- the weights tar: what is refused ------------------------------------------------------------------
HOSTILE = {
    "absolute path": [("/tmp/lora.safetensors", b"x")],
    "windows drive": [("C:/lora.safetensors", b"x")],
    "backslash": [("..\\lora.safetensors", b"x")],
    "climbing path": [("output/../../lora.safetensors", b"x")],
    "symlink": [special("lora.safetensors", tarfile.SYMTYPE, link="/etc/passwd")],
    "hard link": [("real.bin", b"x"), special("lora.safetensors", tarfile.LNKTYPE, link="real.bin")],
    "character device": [special("lora.safetensors", tarfile.CHRTYPE)],
    "block device": [special("disk", tarfile.BLKTYPE)],
    "fifo": [special("pipe", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tar_entry_is_refused_and_nothing_is_written(workdir, case):
    members = [("lora.safetensors", lora_bytes()), *HOSTILE[case]] if case not in (
        "symlink", "character device") else HOSTILE[case]
    tar = build_tar(workdir / "w.tar", members)
    with pytest.raises(ArchiveError, match="refused"):
        extract_lora(tar, workdir / "out")
    assert list((workdir / "out").iterdir()) == []
    assert written_outside(workdir) == []


def test_an_entry_over_the_member_limit_is_refused(workdir):
    tar = build_tar(workdir / "w.tar", [("lora.safetensors", lora_bytes()), ("big.bin", b"x" * 5000)])
    with pytest.raises(ArchiveError, match="over the"):
        extract_lora(tar, workdir / "out", ArchiveLimits(max_member_bytes=4096))


def test_entries_adding_up_over_the_total_limit_are_refused(workdir):
    tar = build_tar(workdir / "w.tar", [(f"part{i}.bin", b"x" * 800) for i in range(5)])
    with pytest.raises(ArchiveError, match="unpacks to more than"):
        extract_lora(tar, workdir / "out", ArchiveLimits(max_total_bytes=3000))


def test_too_many_entries_are_refused(workdir):
    tar = build_tar(workdir / "w.tar", [(f"f{i}.txt", b"") for i in range(30)])
    with pytest.raises(ArchiveError, match="more than 20 entries"):
        extract_lora(tar, workdir / "out", ArchiveLimits(max_members=20))


@pytest.mark.parametrize(("members", "message"), [
    ([("config.yaml", b"x")], "no .safetensors"),
    ([("a.safetensors", b"x"), ("b.safetensors", b"x")], "2 .safetensors files"),
    ([("x/lora.safetensors", b"x"), ("y/lora.safetensors", b"x")], "2 .safetensors files"),
])
def test_archive_without_exactly_one_lora_is_refused(workdir, members, message):
    with pytest.raises(ArchiveError, match=message):
        extract_lora(build_tar(workdir / "w.tar", members), workdir / "out")


@pytest.mark.parametrize("payload", [b"", b"plain text, not a tar at all" * 40, b"\x1f\x8b\x08broken gzip"])
def test_a_file_that_is_not_a_tar_is_refused(workdir, payload):
    path = workdir / "w.tar"
    path.write_bytes(payload)
    with pytest.raises(ArchiveError, match="not a readable tar"):
        extract_lora(path, workdir / "out")


def test_a_truncated_tar_is_refused_and_leaves_no_partial_file(workdir):
    whole = build_tar(workdir / "w.tar", [("lora.safetensors", lora_bytes() * 50)]).read_bytes()
    (workdir / "w.tar").write_bytes(whole[:2000])
    with pytest.raises(ArchiveError):
        extract_lora(workdir / "w.tar", workdir / "out")
    assert list((workdir / "out").iterdir()) == []


# -- the LoRA file itself ------------------------------------------------------------------------------
def safetensors_with(header: object, data: bytes = b"", declared: int | None = None) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded) if declared is None else declared) + encoded + data


CORRUPT = {
    "too short": b"\x01\x02",
    "header longer than the file": safetensors_with({}, declared=10_000),
    "header not json": struct.pack("<Q", 5) + b"{nope",
    "header not an object": safetensors_with([1, 2]),
    "no tensors": safetensors_with({"__metadata__": {"a": "b"}}),
    "unknown dtype": safetensors_with({"t": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, b"x" * 16),
    "outside the file": safetensors_with({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"x" * 8),
    "wrong byte count": safetensors_with({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, b"x" * 16),
    "overlapping": safetensors_with({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                     "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"x" * 12),
    "metadata not strings": safetensors_with({"__metadata__": {"a": 1},
                                              "t": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"x"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_a_lora_that_is_not_valid_safetensors_is_refused_and_removed(workdir, case):
    tar = build_tar(workdir / "w.tar", [("lora.safetensors", CORRUPT[case])])
    with pytest.raises(ArchiveError):
        extract_lora(tar, workdir / "out")
    assert list((workdir / "out").iterdir()) == []


_DTYPES = st.sampled_from([np.float32, np.float16, np.int64, np.uint8, np.bool_])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.text("abcdefghijklmnop._", min_size=1, max_size=20),
                       st.tuples(st.lists(st.integers(0, 5), max_size=3), _DTYPES), min_size=1, max_size=6))
def test_every_file_safetensors_writes_passes_our_check_with_its_shapes(tmp_path, tensors):
    arrays = {name: np.zeros(shape, dtype=dtype) for name, (shape, dtype) in tensors.items()}
    path = tmp_path / "t.safetensors"
    path.write_bytes(save_safetensors(arrays))
    assert check_safetensors(path) == {name: list(shape) for name, (shape, _) in tensors.items()}
