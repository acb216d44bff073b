"""Estimates of steps, time, peak VRAM and cost for a training config, before anything runs.

A small multiplicative model anchored on published figures (see docs/estimates.md):
seconds/step = anchor(family) × (pixels/anchor pixels)^1.15 × batch^0.85 × factors for gradient
checkpointing, fp32 and text-encoder training ÷ the GPU class's speed relative to an H100.
"""

from __future__ import annotations

from dataclasses import dataclass

from lorasite.errors import InvalidInput
from training_app.config import TrainingConfig
from training_app.trainer.config import TrainConfig
from training_app.trainer.layer_shapes import UNETS, adapter_parameters, materialised_weights
from training_app.trainer.networks import describe

# bf16, batch 1, rank 16, on an H100: a published sweep measured 0.181 s/step for SD 1.5 at 512 px
# and 0.606 s/step for SDXL at 1024 px. Flux.1-dev (12 B parameters) from community reports, ~1.6.
ANCHORS = {"sd15": (0.181, 512), "sdxl": (0.606, 1024), "flux": (1.6, 1024)}
# Our tiny generated model on a 2-core CPU (benchmarks/trainer_throughput.py), batch 1 at 64 px.
TINY_ANCHOR = (0.06, 64)
GPU_SPEED = {"h100": 1.0, "h200": 1.05, "a100": 0.55, "l40s": 0.5, "rtx4090": 0.5, "rtx3090": 0.3,
             "a10g": 0.25, "t4": 0.1, "cpu": 0.004}
GPU_MEMORY_GB = {"h100": 80, "h200": 141, "a100": 80, "l40s": 48, "rtx4090": 24, "rtx3090": 24, "a10g": 24,
                 "t4": 16, "cpu": 0}
# Weights resident during training (bf16/fp16), GB: UNet/transformer + text encoder(s) + VAE.
WEIGHTS_GB = {"sd15": 2.1, "sdxl": 6.9, "flux": 33.0}
# Activation memory of one sample at the anchor resolution, GB: without / with gradient checkpointing.
ACTIVATIONS_GB = {"sd15": (3.5, 1.2), "sdxl": (14.0, 4.0), "flux": (30.0, 8.0)}
CUDA_OVERHEAD_GB = 0.8
# Step time of each network relative to LoRA on the same layers (benchmarks/networks.py, tiny SD 1.5, CPU,
# medians of interleaved A/B runs; docs/benchmarks.md). LoHa, LoKr and DoRA rebuild a full-size weight per
# layer each step, which costs relatively less on a GPU's wide matrix units: read these as upper bounds.
# Measured ratios vs LoRA: LoCon 0.81 (with its convolutions), LoHa 0.88, LoKr 0.65, DoRA 0.73.
NETWORK_TIME_FACTOR = {"lora": 1.0, "locon": 1.25, "loha": 1.15, "lokr": 1.5}
DORA_TIME_FACTOR = 1.35
# Per trainable adapter number: fp32 weight, gradient and AdamW's two moments.
ADAPTER_BYTES = 16
# Per number of the full-size update LoHa/LoKr rebuild each step, kept for the backward pass in fp32: LoHa keeps
# both Hadamard factors and their product, LoKr the Kronecker product.
MATERIALISED_BYTES = {"lora": 0, "locon": 0, "loha": 12, "lokr": 4}
# Header of a kohya/LyCORIS safetensors file: tensor index and ss_* metadata.
FILE_HEADER_BYTES = 60_000
MODEL_LOAD_SECONDS = {"sd15": 20.0, "sdxl": 45.0, "flux": 120.0}
# Paid backends, US$ per second of GPU time (published per-second pricing for these classes).
PRICE_PER_SECOND = {"h100": 0.001525, "a100": 0.0014, "l40s": 0.000975, "t4": 0.000225}


@dataclass(frozen=True)
class Estimate:
    total_steps: int
    image_count: int
    samples_per_epoch: int
    family: str
    gpu: str
    seconds_per_step: float
    estimated_seconds: float
    backend_estimated_seconds: float
    peak_vram_gb: float
    network: str
    file_size_mb: float | None  # the kohya/LyCORIS file (fp32); None where the model's layers are not known
    fits_on_gpu: bool
    estimated_cost_usd: float | None
    notes: list[str]


def seconds_per_step(config: TrainingConfig, family: str, gpu: str, tiny: bool = False) -> float:
    anchor, anchor_px = TINY_ANCHOR if tiny else ANCHORS[family]
    speed = 1.0 if tiny else GPU_SPEED[gpu]
    pixels = (config.resolution / anchor_px) ** 2
    t = anchor * pixels ** 1.15 * config.batch_size ** 0.85
    if config.gradient_checkpointing:
        t *= 1.3
    if config.mixed_precision == "no" and not tiny:
        t *= 2.0
    if config.train_text_encoder:
        t *= 1.15
    t *= 1 + (config.rank / 128) * 0.1  # LoRA width adds little next to the frozen base
    t *= NETWORK_TIME_FACTOR[config.network] * (DORA_TIME_FACTOR if config.dora else 1.0)
    if config.target_layers != "attention":
        t *= 1.1  # more adapted layers: small next to the base model's own work
    return t * config.gradient_accumulation_steps / speed


def peak_vram_gb(config: TrainingConfig, family: str) -> float:
    anchor_px = ANCHORS[family][1]
    plain, checkpointed = ACTIVATIONS_GB[family]
    per_sample = checkpointed if config.gradient_checkpointing else plain
    activations = per_sample * (config.resolution / anchor_px) ** 2 * config.batch_size
    if config.mixed_precision == "no":
        activations *= 2
    if family in UNETS:
        network = _trainer_config(config)
        lora_gb = (adapter_parameters(network, family) * ADAPTER_BYTES
                   + materialised_weights(network, family) * MATERIALISED_BYTES[network.network]) / 1e9
    else:  # LoRA params in fp32 plus AdamW's two moments: small, but grows with rank.
        lora_gb = 0.3 * config.rank / 16
    weights = WEIGHTS_GB[family] * (2 if config.mixed_precision == "no" else 1)
    return round(weights + activations + lora_gb + CUDA_OVERHEAD_GB, 1)


def file_size_mb(config: TrainingConfig, family: str) -> float | None:
    """Size of the kohya/LyCORIS file: every adapter number in fp32 plus the header."""
    if family not in UNETS:
        return None
    return round((adapter_parameters(_trainer_config(config), family) * 4 + FILE_HEADER_BYTES) / 1e6, 1)


def _trainer_config(config: TrainingConfig) -> TrainConfig:
    """The trainer's view of the config (its derived values: conv rank, explicit targets)."""
    return TrainConfig.from_dict(config.to_trainer_dict())


def estimate(config: TrainingConfig, image_count: int, family: str, gpu: str = "h100",
             paid: bool = False, tiny: bool = False, repeats_total: int | None = None,
             total_steps: int | None = None) -> Estimate:
    """`total_steps`, when the caller knows it exactly (planned_total_steps on a dataset), wins."""
    if family not in ANCHORS:
        raise InvalidInput(f"Unknown model family {family!r}.", [{"loc": ["family"], "msg": "must be sd15, sdxl or flux"}])
    if gpu not in GPU_SPEED:
        raise InvalidInput(f"Unknown GPU class {gpu!r}; known: {', '.join(GPU_SPEED)}.",
                           [{"loc": ["gpu"], "msg": f"must be one of {', '.join(GPU_SPEED)}"}])
    if image_count < 1:
        raise InvalidInput("The dataset has no trainable images.", [{"loc": ["image_count"], "msg": "at least 1"}])
    notes = []
    samples = repeats_total if repeats_total is not None else image_count * config.repeats
    steps = total_steps or config.total_steps(image_count, repeats_total=samples)
    per_step = seconds_per_step(config, family, gpu, tiny=tiny)
    compute = steps * per_step
    sample_count = (steps // config.sample_every_n_steps if config.sample_every_n_steps else 0) + 1
    # One sample image: ~0.3 s on the tiny model; ~2.5 s for 20-30 denoising steps at 512² on an H100,
    # growing with pixels and slower GPUs.
    per_image = 0.3 if tiny else 2.5 * (config.resolution / 512) ** 2 / GPU_SPEED[gpu]
    sampling = sample_count * max(1, len(config.sample_prompts)) * per_image
    backend_total = compute + (1.0 if tiny else MODEL_LOAD_SECONDS[family]) + sampling
    # The tiny demo model needs well under a gigabyte whatever the settings.
    vram = 0.5 if tiny else peak_vram_gb(config, family)
    fits = tiny or gpu == "cpu" or vram <= GPU_MEMORY_GB[gpu]
    if not fits:
        notes.append(f"about {vram} GB exceeds the {GPU_MEMORY_GB[gpu]} GB of a {gpu}: turn on gradient "
                     "checkpointing, lower the batch size or the resolution")
    if tiny:
        notes.append("tiny demo model: timed on a laptop CPU, not a GPU")
    cost = None
    if paid:
        price = PRICE_PER_SECOND.get(gpu)
        if price is None:
            notes.append(f"no published price for {gpu} on this backend")
        else:
            cost = round(backend_total * price, 2)
    return Estimate(
        total_steps=steps, image_count=image_count, samples_per_epoch=samples, family=family, gpu=gpu,
        seconds_per_step=round(per_step, 4), estimated_seconds=round(compute, 1),
        backend_estimated_seconds=round(backend_total, 1), peak_vram_gb=vram,
        network=describe(config.network, config.dora), file_size_mb=None if tiny else file_size_mb(config, family),
        fits_on_gpu=fits,
        estimated_cost_usd=cost, notes=notes,
    )




def planned_total_steps(config: TrainingConfig, images: list[dict]) -> int:
    """Exactly the trainer's step count: batches are cut per aspect-ratio bucket, as it does, using the
    same bucket functions (datasets_app.imaging) on the snapshot's image sizes."""
    from datasets_app import imaging

    if config.max_steps:
        return config.max_steps
    if config.bucketing:
        buckets = imaging.make_bucket_set(config.resolution, min_side=imaging.bucket_min_side_for(config.resolution),
                                          step=imaging.bucket_step_for(config.resolution))
    else:
        buckets = [(config.resolution, config.resolution)]
    per_bucket: dict[tuple[int, int], int] = {}
    for image in images:
        bucket = imaging.nearest_bucket(int(image["width"]), int(image["height"]), buckets)
        per_bucket[bucket] = per_bucket.get(bucket, 0) + effective_repeats(image, config)
    batches = sum(-(-count // config.batch_size) for count in per_bucket.values())
    return max(1, config.epochs * -(-batches // config.gradient_accumulation_steps))


def effective_repeats(image: dict, config: TrainingConfig) -> int:
    """An image's own repeats (kohya folder number) times the job's `repeats` multiplier."""
    return max(1, int(image.get("repeats") or 1)) * config.repeats
