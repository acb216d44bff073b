"""Training data: image preparation, captions, bucket-aware batching and caches.

Images go through :mod:`datasets_app.imaging` (the same code the portal's crop
preview uses), are assigned an aspect-ratio bucket, and are centre-cropped to
it. Because the crop is deterministic the VAE only has to see each image once
(twice with ``flip_aug``: both orientations are cached), and the cached
*distribution* (mean and std) is re-sampled every step, so caching changes
speed but not the training objective.

Captions are rebuilt every step from the base caption (trigger word, tag
shuffle, caption dropout); text embeddings are cached only for captions that
can actually occur, which is every variant when captions are static and
nothing when tags are shuffled (those are encoded per step).

All randomness comes from generators owned by the training loop, and the
sampler's position is part of its state, so a resumed run replays exactly.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from datasets_app import imaging

from .config import DatasetItem, TrainConfig, TrainerConfigError
from .model_hash import sha256_file


@dataclass(frozen=True)
class PreparedImage:
    """One dataset image after bucketing (pixels are loaded on demand)."""

    index: int
    path: Path
    caption: str
    repeats: int
    original_size: tuple[int, int]  # (height, width) after EXIF rotation
    bucket: tuple[int, int]  # (width, height)
    crop_top_left: tuple[int, int]  # in the resized image, before any flip
    scaled_width: int
    file_sha256: str


def buckets_for(cfg: TrainConfig) -> list[tuple[int, int]]:
    """The bucket set the trainer uses (a single square when bucketing is off)."""
    if not cfg.bucketing:
        return [(cfg.resolution, cfg.resolution)]
    return imaging.make_bucket_set(
        cfg.resolution,
        min_side=imaging.bucket_min_side_for(cfg.resolution),
        step=imaging.bucket_step_for(cfg.resolution),
    )


def prepare_images(items: Sequence[DatasetItem], cfg: TrainConfig) -> list[PreparedImage]:
    """Open every image once to find its size, bucket and crop; fail early on unreadable files."""
    buckets = buckets_for(cfg)
    out: list[PreparedImage] = []
    for i, item in enumerate(items):
        if not item.path.is_file():
            raise TrainerConfigError(f"training image not found: {item.path}")
        try:
            img = imaging.open_image(item.path)
        except Exception as exc:
            raise TrainerConfigError(f"cannot read training image {item.path.name}: {exc}") from exc
        w, h = img.size
        bw, bh = imaging.nearest_bucket(w, h, buckets)
        scale = max(bw / w, bh / h)
        sw, sh = max(bw, round(w * scale)), max(bh, round(h * scale))
        out.append(
            PreparedImage(
                index=i,
                path=item.path,
                caption=item.caption,
                repeats=item.repeats or cfg.repeats,
                original_size=(h, w),
                bucket=(bw, bh),
                crop_top_left=((sh - bh) // 2, (sw - bw) // 2),
                scaled_width=sw,
                file_sha256=sha256_file(item.path),
            )
        )
    return out


def load_pixels(image: PreparedImage, flip: bool) -> Any:
    """The cropped image as a (3, H, W) float tensor in [-1, 1], optionally mirrored."""
    import torch

    img = imaging.normalize_mode(imaging.open_image(image.path))
    img, _ = imaging.resize_and_crop(img, *image.bucket, crop="center")
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    t = t.reshape(img.height, img.width, 3).permute(2, 0, 1).float()
    return t / 127.5 - 1.0


def crop_for(image: PreparedImage, flip: bool) -> tuple[int, int]:
    """SDXL crop coordinate of the sample actually trained on (mirrored horizontally when flipped)."""
    top, left = image.crop_top_left
    if flip:
        left = image.scaled_width - image.bucket[0] - left
    return (top, left)


# ---------------------------------------------------------------- captions


def split_tags(caption: str) -> list[str]:
    """Comma-separated tags, stripped, empties dropped."""
    return [t.strip() for t in caption.split(",") if t.strip()]


def with_trigger(caption: str, trigger_word: str) -> str:
    """Put the trigger word first unless the caption already starts with it."""
    trigger = trigger_word.strip()
    if not trigger:
        return caption.strip()
    tags = split_tags(caption)
    if tags and tags[0].lower() == trigger.lower():
        return ", ".join(tags)
    tags = [t for t in tags if t.lower() != trigger.lower()]
    return ", ".join([trigger, *tags])


class CaptionPolicy:
    """Turns a base caption into the caption of one training sample.

    The trigger word is always first and never shuffled; after it the first
    ``keep_tokens`` tags stay in place and the rest are shuffled when
    ``shuffle_tags`` is on. With probability ``caption_dropout`` the whole
    caption becomes empty (unconditional sample, which keeps CFG working).
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.trigger = cfg.trigger_word.strip()
        self.keep = cfg.keep_tokens + (1 if self.trigger else 0)
        self.shuffle = cfg.shuffle_tags
        self.dropout = cfg.caption_dropout

    def base(self, caption: str) -> str:
        return with_trigger(caption, self.trigger)

    def is_static(self, caption: str) -> bool:
        """True when shuffling cannot change this caption (so it can be cached)."""
        return not self.shuffle or len(split_tags(self.base(caption))) - self.keep <= 1

    def variants(self, caption: str) -> list[str]:
        """Every caption a static base caption can turn into."""
        out = [self.base(caption)]
        if self.dropout > 0:
            out.append("")
        return out

    def build(self, caption: str, rng: random.Random) -> str:
        # Always consume the same number of draws so the stream stays aligned on resume.
        drop = rng.random() < self.dropout
        text = self.base(caption)
        if self.shuffle:
            tags = split_tags(text)
            head, tail = tags[: self.keep], tags[self.keep :]
            rng.shuffle(tail)
            text = ", ".join(head + tail)
        return "" if drop else text


def tag_frequency(items: Iterable[DatasetItem | PreparedImage], trigger_word: str = "") -> dict[str, int]:
    """How many images carry each tag (kohya's ss_tag_frequency, per image not per repeat)."""
    counts: Counter[str] = Counter()
    for item in items:
        counts.update(set(split_tags(with_trigger(item.caption, trigger_word))))
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def dataset_sha256(images: Sequence[PreparedImage]) -> str:
    """Fingerprint of the image bytes, captions and repeats (order independent)."""
    rows = sorted(f"{im.file_sha256}\t{im.repeats}\t{im.caption}" for im in images)
    return hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- sampler


class BucketBatchSampler:
    """Endless stream of batches whose images all share one bucket.

    Each epoch lists every image ``repeats`` times, shuffles within buckets,
    cuts batches (the last batch of a bucket may be smaller) and shuffles the
    batch order. An epoch's order depends only on (seed, epoch), so the state
    is just (epoch, position) and resuming replays exactly.
    """

    def __init__(self, images: Sequence[PreparedImage], batch_size: int, seed: int) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.by_bucket: dict[tuple[int, int], list[int]] = {}
        for im in images:
            self.by_bucket.setdefault(im.bucket, []).extend([im.index] * im.repeats)
        self.epoch = 0
        self.position = 0
        self._batches = self._epoch_batches(0)

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"{self.seed}:{epoch}")
        batches: list[list[int]] = []
        for bucket in sorted(self.by_bucket):
            entries = list(self.by_bucket[bucket])
            rng.shuffle(entries)
            batches += [entries[i : i + self.batch_size] for i in range(0, len(entries), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def __len__(self) -> int:
        """Batches per epoch."""
        return sum(-(-len(v) // self.batch_size) for v in self.by_bucket.values())

    def next_batch(self) -> list[int]:
        if self.position >= len(self._batches):
            self.epoch += 1
            self.position = 0
            self._batches = self._epoch_batches(self.epoch)
        batch = self._batches[self.position]
        self.position += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("seed") != self.seed or state.get("batch_size") != self.batch_size:
            raise TrainerConfigError("checkpoint was made with a different seed or batch size; cannot resume")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._batches = self._epoch_batches(self.epoch)


# ---------------------------------------------------------------- caches


def module_fingerprint(module: Any) -> str:
    """Cheap content hash of a module's config and weights, for cache keys."""
    import torch

    h = hashlib.sha256(json.dumps(dict(getattr(module, "config", {})), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in module.state_dict().items():
            flat = p.detach().float().flatten()
            h.update(
                f"{name}:{tuple(p.shape)}:{flat.sum().item():.8e}:{flat.abs().sum().item():.8e}".encode()
            )
    return h.hexdigest()[:16]


class LatentCache:
    """VAE latent distributions (mean, std) per (image, flip), in memory or on disk.

    Disk entries are keyed by the image bytes, bucket, crop, flip and a VAE
    fingerprint, so a resumed job reuses them and a changed image never hits a
    stale entry.
    """

    def __init__(
        self, images: Sequence[PreparedImage], flips: Sequence[bool], vae_key: str, cache_dir: Path | None
    ) -> None:
        self.images = images
        self.flips = tuple(flips)
        self.vae_key = vae_key
        self.cache_dir = cache_dir
        self._mem: dict[tuple[int, bool], tuple[Any, Any]] = {}

    def _key(self, im: PreparedImage, flip: bool) -> str:
        raw = f"{im.file_sha256}|{im.bucket}|{im.crop_top_left}|{flip}|{self.vae_key}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def _file(self, im: PreparedImage, flip: bool) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / f"{self._key(im, flip)}.safetensors"

    def build(
        self,
        encode: Callable[[Any], tuple[Any, Any]],
        log: Callable[[str], None],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Encode every (image, flip) not cached yet; ``encode`` maps pixels (1,3,H,W) -> (mean, std).
        ``progress`` hears how many (image, flip) pairs are done, encoded or reused, after each one."""
        from safetensors.torch import load_file, save_file

        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        encoded = reused = 0
        for im in self.images:
            for flip in self.flips:
                if self.cache_dir is not None:
                    path = self._file(im, flip)
                    if path.is_file():
                        try:
                            load_file(str(path))
                            reused += 1
                            if progress is not None:
                                progress(encoded + reused)
                            continue
                        except Exception:  # a torn write from a killed run: re-encode
                            path.unlink(missing_ok=True)
                mean, std = encode(load_pixels(im, flip).unsqueeze(0))
                mean, std = mean[0].detach().float().cpu(), std[0].detach().float().cpu()
                encoded += 1
                if self.cache_dir is None:
                    self._mem[(im.index, flip)] = (mean, std)
                else:
                    tmp = path.with_suffix(".tmp")
                    save_file({"mean": mean.contiguous(), "std": std.contiguous()}, str(tmp))
                    tmp.replace(path)
                if progress is not None:
                    progress(encoded + reused)
        where = "memory" if self.cache_dir is None else str(self.cache_dir)
        log(f"latent cache: {encoded} encoded, {reused} reused ({where})")

    def get(self, index: int, flip: bool) -> tuple[Any, Any]:
        if self.cache_dir is None:
            return self._mem[(index, flip)]
        from safetensors.torch import load_file

        data = load_file(str(self._file(self.images[index], flip)))
        return data["mean"], data["std"]


class TextCache:
    """Text-encoder outputs per caption string (only used while the text encoder is frozen)."""

    def __init__(self, encode: Callable[[list[str]], tuple[Any, Any]]) -> None:
        self._encode = encode
        self._cache: dict[str, tuple[Any, Any]] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def precompute(self, captions: Iterable[str], batch_size: int = 16) -> None:
        todo = sorted({c for c in captions if c not in self._cache})
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            hidden, pooled = self._encode(chunk)
            for j, cap in enumerate(chunk):
                self._cache[cap] = (hidden[j].detach(), None if pooled is None else pooled[j].detach())

    def lookup(self, captions: Sequence[str]) -> tuple[Any, Any] | None:
        """Stacked embeddings if every caption is cached, else None (caller encodes)."""
        import torch

        if not all(c in self._cache for c in captions):
            return None
        hidden = torch.stack([self._cache[c][0] for c in captions])
        pooled_list = [self._cache[c][1] for c in captions]
        pooled = None if pooled_list[0] is None else torch.stack(pooled_list)
        return hidden, pooled
