"""The ``__metadata__`` header of our LoRA files, as other tools read it.

* kohya sd-scripts' ``ss_*`` training keys (A1111/Forge's metadata view, Civitai's upload form,
  ComfyUI-Manager), including ``ss_datasets`` and ``ss_bucket_info`` from the trainer's real buckets;
* the file hashes sd-scripts writes, ``sshs_model_hash`` and ``sshs_legacy_hash`` (added by
  :func:`with_file_hashes` once the tensor bytes are final, see ``export._atomic_save``);
* Stability's ModelSpec 1.0.0 ``modelspec.*`` keys;
* our own ``lorasite_*`` keys.

Every value is a string; JSON-valued keys are ``json.dumps`` of the structure.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .data import PreparedImage, tag_frequency
from .networks import describe, kohya_network_metadata, unet_targets

MODELSPEC_VERSION = "1.0.0"
MODELSPEC_ARCHITECTURE = {"sd15": "stable-diffusion-v1/lora", "sdxl": "stable-diffusion-xl-v1-base/lora"}
MODELSPEC_IMPLEMENTATION = {"sd15": "diffusers", "sdxl": "https://github.com/Stability-AI/generative-models"}
KOHYA_BASE_MODEL_VERSION = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}
# What the legacy hash is computed over: sd-scripts hashes the file as saved with its training keys
# only, so that keys added later (by us, or by a user's metadata editor) do not move the hashed bytes.
LEGACY_HASH_PREFIX = "ss_"
# A job trains in one process on one device: the batch an optimizer step sees is batch x accumulation.
PROCESSES = 1
FILE_HASH_KEYS = ("sshs_model_hash", "sshs_legacy_hash", "modelspec.hash_sha256")

DORA_SCALE_RULE = ("per output channel, shape (out, 1, ...); stores m*(|W|+eps)/|W+dW| so that ComfyUI and Forge, "
                   "which divide by the base weight's norm |W|, reproduce peft's m*(W+dW)/|W+dW|")


def new_session_id() -> str:
    """kohya's ``ss_session_id``: a random 32-bit number, drawn without touching the training RNGs."""
    return str(secrets.randbelow(2**32))


def subset_folder(repeats: int, trigger_word: str, output_name: str) -> str:
    """The kohya folder name a group of images would train from: ``<repeats>_<trigger>``."""
    return f"{repeats}_{trigger_word.strip() or output_name}"


def bucket_info(images: Sequence[PreparedImage], buckets: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """kohya's bucket_info: each used bucket by its index in the bucket set, with its (width, height)
    and how many samples an epoch draws from it (images times repeats, as kohya counts), plus the
    mean absolute difference between each image's aspect ratio and its bucket's."""
    index = {tuple(b): i for i, b in enumerate(buckets)}
    counts: dict[tuple[int, int], int] = {}
    for im in images:
        counts[im.bucket] = counts.get(im.bucket, 0) + im.repeats
    used = sorted(counts, key=lambda b: index[b])
    errors = [abs(im.bucket[0] / im.bucket[1] - im.original_size[1] / im.original_size[0]) for im in images]
    return {
        "buckets": {str(index[b]): {"resolution": list(b), "count": counts[b]} for b in used},
        "mean_img_ar_error": sum(errors) / len(errors) if errors else 0.0,
    }


def dataset_metadata(
    cfg: Any, images: Sequence[PreparedImage], buckets: Sequence[tuple[int, int]], output_name: str
) -> dict[str, Any]:
    """kohya's ``ss_datasets`` entry for our one dataset: images with the same repeat count form one
    subset, named after the ``<repeats>_<trigger>`` folder kohya would read them from."""
    groups: dict[int, list[PreparedImage]] = {}
    for im in images:
        groups.setdefault(im.repeats, []).append(im)
    subsets, frequencies = [], {}
    for repeats in sorted(groups, reverse=True):
        folder = subset_folder(repeats, cfg.trigger_word, output_name)
        frequencies[folder] = tag_frequency(groups[repeats], cfg.trigger_word)
        subsets.append({
            "img_count": len(groups[repeats]),
            "num_repeats": repeats,
            "color_aug": False,
            "flip_aug": cfg.flip_aug,
            "random_crop": False,
            "shuffle_caption": cfg.shuffle_tags,
            "keep_tokens": cfg.keep_tokens,
            "image_dir": folder,
            "class_tokens": cfg.trigger_word,
            "is_reg": False,
        })
    entry: dict[str, Any] = {
        "is_dreambooth": True,
        "batch_size_per_device": cfg.batch_size,
        "num_train_images": sum(im.repeats for im in images),
        "num_reg_images": 0,
        "resolution": [cfg.resolution, cfg.resolution],
        "enable_bucket": cfg.bucketing,
    }
    if cfg.bucketing:
        sides = [side for b in buckets for side in b]
        entry["min_bucket_reso"], entry["max_bucket_reso"] = min(sides), max(sides)
    entry.update(tag_frequency=frequencies, bucket_info=bucket_info(images, buckets), subsets=subsets)
    return entry


def modelspec_metadata(
    *, family: str, title: str, resolution: int, finished_at: float, trigger_word: str,
    description: str = "", author: str = "",
) -> dict[str, str]:
    """Stability's ModelSpec 1.0.0 keys (``modelspec.hash_sha256`` comes with the file hashes)."""
    meta = {
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": MODELSPEC_ARCHITECTURE[family],
        "modelspec.implementation": MODELSPEC_IMPLEMENTATION[family],
        "modelspec.title": title,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.date": datetime.fromtimestamp(finished_at, tz=UTC).isoformat(timespec="seconds"),
    }
    optional = {"trigger_phrase": trigger_word.strip(), "description": description, "author": author}
    meta.update({f"modelspec.{key}": value for key, value in optional.items() if value})
    return meta


def legacy_hash_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """The header the legacy hash's file is saved with (see ``LEGACY_HASH_PREFIX``)."""
    return {k: v for k, v in metadata.items() if k.startswith(LEGACY_HASH_PREFIX)}


def with_file_hashes(metadata: Mapping[str, str], data_sha256: str, legacy_hash: str) -> dict[str, str]:
    """``metadata`` plus the hashes of the file it heads (computed from the final tensor bytes)."""
    return {
        **{k: v for k, v in metadata.items() if k not in FILE_HASH_KEYS},
        "sshs_model_hash": data_sha256,
        "sshs_legacy_hash": legacy_hash,
        "modelspec.hash_sha256": f"0x{data_sha256}",
    }


def build_metadata(
    *,
    cfg: Any,
    family: str,
    images: Sequence[PreparedImage],
    buckets: Sequence[tuple[int, int]],
    started_at: float,
    finished_at: float,
    steps: int,
    epoch: int,
    num_epochs: int,
    output_name: str,
    dataset_sha256: str,
    session_id: str,
    base_model_name: str = "",
    base_model_sha256: str = "",
    base_model_short_hash: str = "",
    run_metadata: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every header key but the file hashes; all values are strings.

    ``run_metadata`` is ``TrainSpec.metadata``: ``job_id``, ``base_model_name``, ``author`` and
    ``description`` fill their keys, any other entry (besides ``output_name``/``dataset_sha256``,
    passed separately) is copied verbatim.
    """
    run_metadata = dict(run_metadata or {})
    job_id = str(run_metadata.pop("job_id", ""))
    base_model_name = str(run_metadata.pop("base_model_name", "") or base_model_name)
    author = str(run_metadata.pop("author", ""))
    description = str(run_metadata.pop("description", ""))
    extra = {k: v for k, v in run_metadata.items() if k not in ("output_name", "dataset_sha256")}
    dataset = dataset_metadata(cfg, images, buckets, output_name)
    meta = {
        **kohya_network_metadata(cfg),
        "ss_session_id": session_id,
        "ss_network_dim": str(cfg.rank),
        "ss_network_alpha": str(cfg.effective_alpha),
        "ss_network_dropout": str(cfg.dropout),
        "ss_base_model_version": KOHYA_BASE_MODEL_VERSION[family],
        "ss_v2": "False",
        "ss_sd_model_name": base_model_name,
        "ss_sd_model_hash": base_model_short_hash,
        "ss_new_sd_model_hash": base_model_sha256,
        "ss_resolution": f"({cfg.resolution}, {cfg.resolution})",
        "ss_enable_bucket": str(cfg.bucketing),
        "ss_num_train_images": str(dataset["num_train_images"]),
        "ss_num_reg_images": "0",
        "ss_num_batches_per_epoch": str(sum(-(-n["count"] // cfg.batch_size)
                                            for n in dataset["bucket_info"]["buckets"].values())),
        "ss_num_epochs": str(num_epochs),
        "ss_tag_frequency": json.dumps({output_name: tag_frequency(images, cfg.trigger_word)},
                                       ensure_ascii=False),
        "ss_datasets": json.dumps([dataset], ensure_ascii=False),
        "ss_bucket_info": json.dumps(dataset["bucket_info"]),
        "ss_training_started_at": f"{started_at:.3f}",
        "ss_training_finished_at": f"{finished_at:.3f}",
        "ss_steps": str(steps),
        "ss_max_train_steps": str(cfg.max_steps or ""),
        "ss_epoch": str(epoch),
        "ss_learning_rate": str(cfg.learning_rate),
        "ss_unet_lr": str(cfg.learning_rate),
        "ss_text_encoder_lr": str(cfg.effective_text_encoder_lr if cfg.train_text_encoder else 0.0),
        "ss_network_train_text_encoder": str(cfg.train_text_encoder),
        "ss_optimizer": cfg.optimizer,
        "ss_lr_scheduler": cfg.lr_scheduler,
        "ss_lr_warmup_steps": str(cfg.lr_warmup_steps),
        "ss_batch_size_per_device": str(cfg.batch_size),
        "ss_total_batch_size": str(cfg.batch_size * cfg.gradient_accumulation_steps * PROCESSES),
        "ss_gradient_accumulation_steps": str(cfg.gradient_accumulation_steps),
        "ss_mixed_precision": cfg.mixed_precision,
        "ss_noise_offset": str(cfg.noise_offset),
        "ss_min_snr_gamma": "" if cfg.min_snr_gamma is None else str(cfg.min_snr_gamma),
        "ss_caption_dropout_rate": str(cfg.caption_dropout),
        "ss_shuffle_caption": str(cfg.shuffle_tags),
        "ss_keep_tokens": str(cfg.keep_tokens),
        "ss_flip_aug": str(cfg.flip_aug),
        "ss_gradient_checkpointing": str(cfg.gradient_checkpointing),
        "ss_seed": str(cfg.seed),
        "ss_clip_skip": str(cfg.clip_skip),
        "ss_output_name": output_name,
        **modelspec_metadata(family=family, title=output_name, resolution=cfg.resolution, finished_at=finished_at,
                             trigger_word=cfg.trigger_word, description=description, author=author),
        "lorasite_trigger_word": cfg.trigger_word,
        "lorasite_job_id": job_id,
        "lorasite_dataset_sha256": dataset_sha256,
        "lorasite_target_modules": ",".join(unet_targets(cfg.target_layers, cfg.network, cfg.custom_target_modules)),
        "lorasite_network": describe(cfg.network, cfg.dora),
        "lorasite_target_layers": cfg.target_layers,
    }
    if cfg.dora:
        meta["lorasite_dora_scale"] = DORA_SCALE_RULE
    for key, value in extra.items():
        meta[str(key)] = str(value)
    return meta
