"""The LoRA header other tools read: kohya sd-scripts' ss_*/sshs_* keys and Stability's ModelSpec,
checked against the file's own bytes with a safetensors reader written here from the format spec
(8-byte little-endian header length, JSON header, `__metadata__`), and against the base model file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from datetime import datetime
from pathlib import Path

import pytest
import torch

from training_app.trainer import DatasetItem, train

MIB, LEGACY_LENGTH = 0x100000, 0x10000


def read_header(path: Path) -> tuple[dict, bytes]:
    """(header JSON, tensor data bytes) of a .safetensors file."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length].decode("utf-8"))
    return header, raw[8 + length:]


def legacy_hash(header: dict, data: bytes) -> str:
    """sd-scripts' legacy hash: the file as it would be saved with its ss_* keys only, sha256 of its
    64 KiB at offset 1 MiB. safetensors writes compact JSON padded with spaces to a multiple of 8;
    only the header's length moves the hashed window, so key order does not matter."""
    metadata = {k: v for k, v in header["__metadata__"].items() if k.startswith("ss_")}
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    text = json.dumps({"__metadata__": metadata, **tensors}, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    saved = struct.pack("<Q", len(text)) + text + data
    return hashlib.sha256(saved[MIB:MIB + LEGACY_LENGTH]).hexdigest()[:8]


def a1111_short_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()[MIB:MIB + LEGACY_LENGTH]).hexdigest()[:8]


def unet_file(model_dir: Path) -> Path:
    return model_dir / "unet" / "diffusion_pytorch_model.safetensors"


def check_file_hashes(path: Path) -> dict[str, str]:
    header, data = read_header(path)
    meta = header["__metadata__"]
    assert meta["sshs_model_hash"] == hashlib.sha256(data).hexdigest()
    assert meta["modelspec.hash_sha256"] == "0x" + meta["sshs_model_hash"]
    assert meta["sshs_legacy_hash"] == legacy_hash(header, data)
    return meta


@pytest.fixture
def repeated_dataset(trainer_helpers, tmp_path: Path) -> tuple[DatasetItem, ...]:
    """The four drawn shapes (two square, one landscape, one portrait); the first one repeated 3 times."""
    items = trainer_helpers.draw_dataset(tmp_path / "data")
    return (dataclasses.replace(items[0], repeats=3), *items[1:])


def test_kohya_file_carries_hashes_datasets_buckets_and_modelspec(
    trainer_helpers, make_spec, tiny_sd15: Path, repeated_dataset
) -> None:
    meta_in = {"output_name": "shapes", "author": "Alpha team", "description": "shapes, fast"}
    spec = make_spec(rank=128, max_steps=2, batch_size=2, gradient_accumulation_steps=2, trigger_word="zzt",
                     metadata=meta_in)
    result = train(dataclasses.replace(spec, items=repeated_dataset))
    path = result.lora_kohya_path
    # Big enough that the legacy hash's window holds tensor bytes, not the empty string's hash.
    assert path.stat().st_size > MIB + LEGACY_LENGTH
    meta = check_file_hashes(path)
    assert meta["sshs_legacy_hash"] != hashlib.sha256(b"").hexdigest()[:8]
    assert all(isinstance(v, str) for v in meta.values())

    assert meta["ss_new_sd_model_hash"] == hashlib.sha256(unet_file(tiny_sd15).read_bytes()).hexdigest()
    assert meta["ss_sd_model_hash"] == a1111_short_hash(unet_file(tiny_sd15))
    assert int(meta["ss_session_id"]) >= 0
    assert meta["ss_total_batch_size"] == "4"
    assert meta["ss_clip_skip"] == "1"
    assert meta["ss_num_epochs"] == "1"  # 6 samples, batches of 2 per bucket: 4 micro-batches, 2 steps

    # 6 training samples: the repeated square (3), the other square, the landscape and the portrait image.
    assert meta["ss_num_train_images"] == "6"
    (dataset,) = json.loads(meta["ss_datasets"])
    assert dataset["batch_size_per_device"] == 2
    assert (dataset["num_train_images"], dataset["num_reg_images"]) == (6, 0)
    assert dataset["resolution"] == [64, 64] and dataset["enable_bucket"] is True
    assert dataset["min_bucket_reso"] <= 64 <= dataset["max_bucket_reso"]
    subsets = sorted(dataset["subsets"], key=lambda s: s["num_repeats"])
    assert [(s["img_count"], s["num_repeats"]) for s in subsets] == [(3, 1), (1, 3)]
    for subset in subsets:
        assert subset["class_tokens"] == "zzt" and subset["image_dir"] == f"{subset['num_repeats']}_zzt"
        assert (subset["color_aug"], subset["random_crop"], subset["flip_aug"]) == (False, False, False)
        assert (subset["shuffle_caption"], subset["keep_tokens"]) == (False, 0)
    assert dataset["tag_frequency"]["3_zzt"] == {"zzt": 1, "circle": 1, "colour 0": 1, "plain background": 1,
                                                 "simple": 1}
    assert dataset["tag_frequency"]["1_zzt"]["zzt"] == 3

    bucket_info = json.loads(meta["ss_bucket_info"])
    assert bucket_info == dataset["bucket_info"]
    buckets = list(bucket_info["buckets"].values())
    assert sum(b["count"] for b in buckets) == 6
    by_shape = {("square" if w == h else "landscape" if w > h else "portrait"): (w, h, b["count"])
                for b in buckets for w, h in [b["resolution"]]}
    assert by_shape["square"] == (64, 64, 4)
    assert by_shape["landscape"][2] == by_shape["portrait"][2] == 1
    # No bucket has exactly the 3:2 or 2:3 shape of the oblong images.
    assert 0 < bucket_info["mean_img_ar_error"] < 1

    assert meta["modelspec.sai_model_spec"] == "1.0.0"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.implementation"] == "diffusers"
    assert meta["modelspec.title"] == "shapes"
    assert meta["modelspec.resolution"] == "64x64"
    assert meta["modelspec.trigger_phrase"] == "zzt"
    assert (meta["modelspec.author"], meta["modelspec.description"]) == ("Alpha team", "shapes, fast")
    date = datetime.fromisoformat(meta["modelspec.date"])
    assert date.tzinfo is not None and date.timestamp() == int(float(meta["ss_training_finished_at"]))

    # The diffusers file heads its own bytes the same way.
    assert check_file_hashes(result.lora_diffusers_path)["sshs_model_hash"] != meta["sshs_model_hash"]

    # Written twice for the hashes, the tensors still reproduce the trained model in diffusers.
    ref_unet, _ = trainer_helpers.model_outputs(
        trainer_helpers.reference_pipeline(tiny_sd15, "sd15", result.checkpoint_path))
    pipe = trainer_helpers.load_pipeline(tiny_sd15, "sd15")
    pipe.load_lora_weights(str(path))
    unet_out, _ = trainer_helpers.model_outputs(pipe)
    assert torch.allclose(unet_out, ref_unet, atol=1e-5)


def test_hashes_passed_in_the_model_spec_are_used_and_no_trigger_means_no_trigger_phrase(make_spec) -> None:
    spec = make_spec(max_steps=1, bucketing=False)
    model = dataclasses.replace(spec.model, weights_sha256="ab" * 32, weights_short_hash="0badcafe")
    meta = check_file_hashes(train(dataclasses.replace(spec, model=model)).lora_kohya_path)
    assert (meta["ss_new_sd_model_hash"], meta["ss_sd_model_hash"]) == ("ab" * 32, "0badcafe")
    assert "modelspec.trigger_phrase" not in meta and "modelspec.author" not in meta
    (dataset,) = json.loads(meta["ss_datasets"])
    assert dataset["enable_bucket"] is False and "min_bucket_reso" not in dataset
    assert dataset["bucket_info"]["buckets"] == {"0": {"resolution": [64, 64], "count": 4}}


def test_sdxl_kohya_file_names_the_sdxl_architecture(make_spec, tiny_sdxl: Path) -> None:
    result = train(make_spec(model=tiny_sdxl, family="sdxl", max_steps=1, trigger_word="zzt"))
    meta = check_file_hashes(result.lora_kohya_path)
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert meta["ss_new_sd_model_hash"] == hashlib.sha256(unet_file(tiny_sdxl).read_bytes()).hexdigest()
    assert meta["ss_sd_model_hash"] == a1111_short_hash(unet_file(tiny_sdxl))
