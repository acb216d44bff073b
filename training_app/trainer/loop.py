"""The training loop: ``train(spec, reporter) -> TrainResult``.

Order of work: validate and prepare images (fail fast, before loading a
model), load the base model, attach LoRA, fill the latent / text caches once,
then run optimizer steps. The hot path only touches the UNet (and the text
encoders when they are trained): VAE and frozen text encoders run during
caching, not per step. All per-step randomness comes from two generators
(``data_rng`` for augmentation, ``torch_gen`` for latents/noise/timesteps)
saved in checkpoints together with the global RNGs, so resuming replays the
uninterrupted run bit for bit on the same machine.
"""

from __future__ import annotations

import functools
import math
import os
import random
import time
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt
from .config import TrainerConfigError, TrainResult, TrainSpec
from .data import (
    BucketBatchSampler,
    CaptionPolicy,
    LatentCache,
    TextCache,
    buckets_for,
    crop_for,
    dataset_sha256,
    load_pixels,
    module_fingerprint,
    prepare_images,
)
from .export import save_diffusers_lora, save_kohya_lora
from .lora import attach_lora, components, load_trainable_state_dict, peft_state_dict, trainable_state_dict
from .lora_header import build_metadata, new_session_id
from .losses import compute_snr, diffusion_loss, min_snr_weights
from .model_hash import ModelHashError, base_model_sha256, base_model_short_hash
from .models import MODEL_LOAD_LOCK, encode_prompts, load_model, sdxl_time_ids
from .networks import describe, layouts_for
from .noise import add_noise, offset_noise, prediction_target
from .optim import build_lr_scheduler, build_optimizer
from .reporter import (
    LORA_DIFFUSERS,
    LORA_KOHYA,
    PHASE_CACHING_LATENTS,
    PHASE_CACHING_TEXT,
    PHASE_LOADING_MODEL,
    PHASE_TRAINING,
    NullReporter,
    Reporter,
    step_line,
)
from .sampling import render_samples

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def resolve_device(device: str | None) -> str:
    """``device`` or, when None, ``LORASITE_TRAIN_DEVICE`` / cuda if available / cpu."""
    import torch

    device = (
        device or os.environ.get("LORASITE_TRAIN_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainerConfigError(f"device {device!r} was requested but no CUDA GPU is available")
    return device


def train(spec: TrainSpec, reporter: Reporter | None = None) -> TrainResult:
    """Train a LoRA as described by ``spec``, reporting progress to ``reporter``.

    Returns when ``total_steps`` are done or ``reporter.should_stop()`` said so;
    in both cases a checkpoint and both LoRA files are written first.
    """
    reporter = reporter or NullReporter()
    # First, before torch is imported: on a cold worker that import alone takes seconds.
    reporter.phase(PHASE_LOADING_MODEL)
    return _Run(spec, reporter).execute()


class _Run:
    def __init__(self, spec: TrainSpec, reporter: Reporter) -> None:
        import torch

        self.spec, self.cfg, self.reporter = spec, spec.config, reporter
        cfg = self.cfg
        self.device = resolve_device(spec.device)
        self.on_cuda = self.device.startswith("cuda")
        if cfg.mixed_precision == "fp16" and not self.on_cuda:
            raise TrainerConfigError("mixed_precision fp16 needs a CUDA GPU; use 'no' (or 'bf16') on CPU")
        self.autocast_dtype = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision]
        # Frozen weights may live in half precision on GPU; LoRA weights always stay fp32.
        self.weight_dtype = self.autocast_dtype if (self.on_cuda and self.autocast_dtype) else torch.float32
        self.out = spec.output_dir
        self.out.mkdir(parents=True, exist_ok=True)
        self.output_name = str(spec.metadata.get("output_name") or "lora")

        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.data_rng = random.Random(cfg.seed)
        self.torch_gen = torch.Generator(device="cpu").manual_seed(cfg.seed)

        self.images = prepare_images(spec.items, cfg)
        self.captions = CaptionPolicy(cfg)
        self.model = load_model(spec.model)
        self._setup_model()
        self._setup_caches()
        self.sampler = BucketBatchSampler(self.images, cfg.batch_size, cfg.seed)
        steps_per_epoch = math.ceil(len(self.sampler) / cfg.gradient_accumulation_steps)
        self.total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
        self.num_epochs = math.ceil(self.total_steps / steps_per_epoch)
        self.session_id = new_session_id()
        self._setup_optimizer()

        self.step = 0
        self.losses: list[float] = []
        self.loss_sum, self.loss_count = 0.0, 0
        self.started_at = time.time()
        self.last_checkpoint_at = time.monotonic()
        self.sample_paths: list[Path] = []
        self.last_checkpoint: Path | None = None
        self.kohya_path: Path | None = None
        self.diffusers_path: Path | None = None
        self.metadata: dict[str, str] = {}
        if spec.resume_from is not None:
            self._resume(spec.resume_from)

    # ------------------------------------------------------------ setup

    def _setup_model(self) -> None:
        import torch
        from diffusers import DDPMScheduler

        cfg, m = self.cfg, self.model
        sched_cfg = dict(m.scheduler_config)
        self.prediction_type = cfg.prediction_type or sched_cfg.get("prediction_type") or "epsilon"
        sched_cfg["prediction_type"] = self.prediction_type
        self.scheduler_config = sched_cfg
        ddpm = DDPMScheduler.from_config(sched_cfg)
        self.num_timesteps = int(ddpm.config.num_train_timesteps)
        self.alphas_cumprod = ddpm.alphas_cumprod.to(self.device)
        self.vae_scale = float(m.vae.config.scaling_factor)
        self.vae_shift = float(getattr(m.vae.config, "shift_factor", None) or 0.0)

        m.vae.requires_grad_(False).eval().to(self.device)  # kept fp32: SD VAEs overflow in fp16
        half = {"dtype": self.weight_dtype} if self.weight_dtype != torch.float32 else {}
        for enc in m.text_encoders:
            enc.eval().to(self.device, **half)
        m.unet.to(self.device, **half)
        with MODEL_LOAD_LOCK:  # creates modules: must not overlap another thread's meta-device load
            self.peft_configs = attach_lora(m.unet, m.text_encoders, cfg)
        self.components = components(m.unet, m.text_encoders, cfg)
        for module in self.components.values():
            for p in module.parameters():
                if p.requires_grad:
                    p.data = p.data.float()
            module.train()
        if cfg.gradient_checkpointing:
            m.unet.enable_gradient_checkpointing()
            if cfg.train_text_encoder:
                for enc in m.text_encoders:
                    # transformers 5 renamed the method; keep working on both spellings.
                    enable = (
                        getattr(enc, "activation_checkpointing_enable", None)
                        or enc.gradient_checkpointing_enable
                    )
                    enable()

    def _setup_caches(self) -> None:
        import torch

        cfg, m = self.cfg, self.model
        self.flips = (False, True) if cfg.flip_aug else (False,)
        self.latent_cache: LatentCache | None = None
        self._pixels: dict[tuple[int, bool], Any] = {}
        if cfg.cache_latents:
            cache_dir = self.out / "cache" / "latents" if cfg.cache_to_disk else None
            self.latent_cache = LatentCache(self.images, self.flips, module_fingerprint(m.vae), cache_dir)
            count = len(self.images) * len(self.flips)
            self.reporter.phase(PHASE_CACHING_LATENTS, 0, count)
            self.latent_cache.build(self._vae_distribution, self.reporter.log,
                                    progress=lambda done: self.reporter.phase(PHASE_CACHING_LATENTS, done, count))
        self.text_cache: TextCache | None = None
        if not cfg.train_text_encoder:

            def encode(caps: list[str]) -> tuple[Any, Any]:
                with torch.no_grad():
                    return encode_prompts(m, caps, self.device, cfg.clip_skip)

            self.text_cache = TextCache(encode)
            static = [
                v
                for im in self.images
                if self.captions.is_static(im.caption)
                for v in self.captions.variants(im.caption)
            ]
            distinct = len(set(static))
            self.reporter.phase(PHASE_CACHING_TEXT, 0, distinct)
            self.text_cache.precompute(static)
            self.reporter.phase(PHASE_CACHING_TEXT, distinct, distinct)
            self.reporter.log(f"text cache: {len(self.text_cache)} caption embeddings")

    def _vae_distribution(self, pixels: Any) -> tuple[Any, Any]:
        import torch

        with torch.no_grad():
            dist = self.model.vae.encode(pixels.to(self.device, dtype=torch.float32)).latent_dist
        return dist.mean, dist.std

    def _setup_optimizer(self) -> None:
        cfg = self.cfg
        groups = []
        for name, module in self.components.items():
            params = [p for p in module.parameters() if p.requires_grad]
            lr = cfg.learning_rate if name == "unet" else cfg.effective_text_encoder_lr
            groups.append({"params": params, "lr": lr})
        self.params = [p for g in groups for p in g["params"]]
        self.optimizer = build_optimizer(groups, cfg, self.device)
        self.lr_scheduler = build_lr_scheduler(self.optimizer, cfg, self.total_steps)
        self.scaler = None
        if cfg.mixed_precision == "fp16":
            import torch

            self.scaler = torch.amp.GradScaler("cuda")

    # ------------------------------------------------------------ one step

    def _latents(self, idx: list[int], flips: list[bool]) -> Any:
        import torch

        if self.latent_cache is not None:
            pairs = [self.latent_cache.get(i, f) for i, f in zip(idx, flips, strict=True)]
        else:
            pairs = []
            for i, f in zip(idx, flips, strict=True):
                if (i, f) not in self._pixels:
                    self._pixels[(i, f)] = load_pixels(self.images[i], f)
                mean, std = self._vae_distribution(self._pixels[(i, f)].unsqueeze(0))
                pairs.append((mean[0], std[0]))
        mean = torch.stack([p[0] for p in pairs]).to(self.device, dtype=torch.float32)
        std = torch.stack([p[1] for p in pairs]).to(self.device, dtype=torch.float32)
        eps = torch.randn(mean.shape, generator=self.torch_gen).to(self.device)
        return ((mean + std * eps) - self.vae_shift) * self.vae_scale

    def _text(self, captions: list[str]) -> tuple[Any, Any]:
        import torch

        if self.text_cache is not None:
            hit = self.text_cache.lookup(captions)
            if hit is not None:
                return hit[0].to(self.device), None if hit[1] is None else hit[1].to(self.device)
            with torch.no_grad():
                return encode_prompts(self.model, captions, self.device, self.cfg.clip_skip)
        return encode_prompts(self.model, captions, self.device, self.cfg.clip_skip)

    def _micro_step(self) -> Any:
        import torch

        cfg = self.cfg
        idx = self.sampler.next_batch()
        flips = [self.data_rng.random() < 0.5 for _ in idx] if cfg.flip_aug else [False] * len(idx)
        captions = [self.captions.build(self.images[i].caption, self.data_rng) for i in idx]
        latents = self._latents(idx, flips)
        bsz = latents.shape[0]
        noise = torch.randn(latents.shape, generator=self.torch_gen)
        noise = offset_noise(noise, cfg.noise_offset, self.torch_gen).to(self.device)
        timesteps = torch.randint(0, self.num_timesteps, (bsz,), generator=self.torch_gen).to(self.device)
        noisy = add_noise(latents, noise, self.alphas_cumprod, timesteps)
        hidden, pooled = self._text(captions)
        added = None
        if self.model.is_sdxl:
            ids = [
                sdxl_time_ids(
                    self.images[i].original_size,
                    crop_for(self.images[i], f),
                    (self.images[i].bucket[1], self.images[i].bucket[0]),
                )
                for i, f in zip(idx, flips, strict=True)
            ]
            added = {
                "text_embeds": pooled,
                "time_ids": torch.tensor(ids, dtype=torch.float32, device=self.device),
            }
        ctx = (
            torch.autocast(self.device.split(":")[0], dtype=self.autocast_dtype)
            if self.autocast_dtype
            else torch.autocast("cpu", enabled=False)
        )
        with ctx:
            pred = self.model.unet(
                noisy.to(self.weight_dtype), timesteps, hidden.to(self.weight_dtype), added_cond_kwargs=added
            ).sample
        target = prediction_target(self.prediction_type, latents, noise, self.alphas_cumprod, timesteps)
        weights = None
        if cfg.min_snr_gamma is not None:
            snr = compute_snr(self.alphas_cumprod, timesteps)
            weights = min_snr_weights(snr, cfg.min_snr_gamma, self.prediction_type)
        loss = diffusion_loss(pred, target, weights)
        scaled = loss / cfg.gradient_accumulation_steps
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        return loss.detach()

    def _optimizer_step(self) -> float:
        import torch

        cfg = self.cfg
        total = sum(self._micro_step() for _ in range(cfg.gradient_accumulation_steps))
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(total) / cfg.gradient_accumulation_steps

    # ------------------------------------------------------------ run

    def execute(self) -> TrainResult:
        cfg, rep = self.cfg, self.reporter
        rep.log(
            f"training {self.spec.model.family} {describe(cfg.network, cfg.dora)} rank {cfg.rank} on {len(self.images)} images, "
            f"{self.total_steps} steps on {self.device} (prediction: {self.prediction_type})"
        )
        rep.phase(PHASE_TRAINING, self.step, self.total_steps)
        stopped = False
        self.last_checkpoint_at = time.monotonic()  # loading and caching are not training time lost
        self._line_started, self._line_losses = time.monotonic(), []
        while self.step < self.total_steps:
            loss = self._optimizer_step()
            self.step += 1
            self.losses.append(loss)
            self.loss_sum += loss
            self.loss_count += 1
            lr = float(self.lr_scheduler.get_last_lr()[0])
            rep.step(self.step, self.total_steps, loss, lr)
            self._progress_line(loss, lr)
            actions = rep.pending_actions()
            stopped = rep.should_stop()
            if "sample" in actions or (
                cfg.sample_every_n_steps and self.step % cfg.sample_every_n_steps == 0
            ):
                self._sample()
            if "save" in actions or stopped:
                self._export()
            if (
                stopped
                or "save" in actions
                or (cfg.save_every_n_steps and self.step % cfg.save_every_n_steps == 0)
                or self._checkpoint_overdue()
            ):
                self._checkpoint()
            if stopped:
                rep.log(f"stopped at step {self.step} on request")
                break
        if not stopped:
            self._export()
            if self.last_checkpoint is None or not self.last_checkpoint.name.endswith(f"{self.step:08d}"):
                self._checkpoint()
        return TrainResult(
            steps_completed=self.step,
            total_steps=self.total_steps,
            final_loss=self.losses[-1] if self.losses else None,
            avg_loss=self.loss_sum / self.loss_count if self.loss_count else None,
            stopped=stopped,
            lora_kohya_path=self.kohya_path,
            lora_diffusers_path=self.diffusers_path,
            checkpoint_path=self.last_checkpoint,
            sample_paths=tuple(self.sample_paths),
            metadata=self.metadata,
            losses=tuple(self.losses),
        )

    def _progress_line(self, loss: float, lr: float) -> None:
        """Every ``log_every_n_steps`` (and at the last step) a kohya-style line: the interval's mean loss and speed."""
        every = self.cfg.log_every_n_steps
        self._line_losses.append(loss)
        if not every or (self.step % every and self.step != self.total_steps):
            return
        now = time.monotonic()
        rate = len(self._line_losses) / max(now - self._line_started, 1e-9)
        mean = sum(self._line_losses) / len(self._line_losses)
        self.reporter.log(step_line(self.step, self.total_steps, mean, lr, rate))
        self._line_started, self._line_losses = now, []

    def _sample(self) -> None:
        prompts = list(self.cfg.sample_prompts) or [self.captions.base(self.images[0].caption) or "a photo"]
        paths = render_samples(
            self.model,
            self.scheduler_config,
            prompts,
            self.out / "samples",
            self.step,
            seed=self.cfg.seed,
            resolution=self.cfg.resolution,
            num_inference_steps=self.cfg.sample_steps,
            guidance_scale=self.cfg.sample_guidance_scale,
            device=self.device,
            autocast_dtype=self.autocast_dtype if self.on_cuda else None,
            clip_skip=self.cfg.clip_skip,
        )
        for prompt, path in zip(prompts, paths, strict=True):
            self.sample_paths.append(path)
            self.reporter.sample(self.step, prompt, path)

    def _export(self) -> None:
        cfg, md = self.cfg, self.spec.metadata
        peft_sds = {name: peft_state_dict(module) for name, module in self.components.items()}
        sha256, short = self.base_model_hashes
        self.metadata = build_metadata(
            cfg=cfg,
            family=self.model.family,
            images=self.images,
            buckets=buckets_for(cfg),
            started_at=self.started_at,
            finished_at=time.time(),
            steps=self.step,
            epoch=self.sampler.epoch + 1,
            num_epochs=self.num_epochs,
            output_name=self.output_name,
            dataset_sha256=str(md.get("dataset_sha256") or dataset_sha256(self.images)),
            session_id=self.session_id,
            base_model_name=self.spec.model.path.name,
            base_model_sha256=sha256,
            base_model_short_hash=short,
            run_metadata=md,
        )
        self.kohya_path = save_kohya_lora(
            self.out / f"{self.output_name}.safetensors",
            self.components,
            self.model.family,
            self.metadata,
            dict(self.model.unet.config),
        )
        written = [self.kohya_path.name]
        if LORA_DIFFUSERS in layouts_for(cfg.network):
            self.diffusers_path = save_diffusers_lora(
                self.out / "diffusers" / "pytorch_lora_weights.safetensors",
                peft_sds,
                self.peft_configs,
                self.model.family,
                self.metadata,
            )
            written.append("diffusers/")
        self.reporter.log(f"saved {describe(cfg.network, cfg.dora)} at step {self.step}: {', '.join(written)}")
        self.reporter.lora_saved(LORA_KOHYA, self.kohya_path, self.step)
        if self.diffusers_path is not None:
            self.reporter.lora_saved(LORA_DIFFUSERS, self.diffusers_path, self.step)

    @functools.cached_property
    def base_model_hashes(self) -> tuple[str, str]:
        """The base model's (sha256, A1111 short hash): as the caller passed them, else hashed here, once."""
        m = self.spec.model
        try:
            return (m.weights_sha256 or base_model_sha256(m.path), m.weights_short_hash or base_model_short_hash(m.path))
        except ModelHashError as exc:  # the model loaded, so only its hashes go missing from the header
            self.reporter.log(f"base model not hashed: {exc}")
            return ("", "")

    def _checkpoint_overdue(self) -> bool:
        every = self.spec.checkpoint_every_seconds
        return every is not None and time.monotonic() - self.last_checkpoint_at >= every

    def _checkpoint(self) -> None:
        self.last_checkpoint_at = time.monotonic()
        state = {
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": ckpt.capture_rng(self.data_rng, self.torch_gen),
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        meta = {
            "config": self.cfg.to_dict(),
            "family": self.model.family,
            "total_steps": self.total_steps,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "started_at": self.started_at,
            "last_loss": self.losses[-1] if self.losses else None,
        }
        self.last_checkpoint = ckpt.save_checkpoint(
            self.out, self.step, trainable_state_dict(self.components), state, meta
        )
        self.reporter.checkpoint(self.step, self.last_checkpoint)

    def _resume(self, path: Path) -> None:
        data = ckpt.load_checkpoint(path)
        meta, state = data["meta"], data["training_state"]
        ckpt.check_resumable(meta, self.cfg.to_dict(), self.model.family)
        load_trainable_state_dict(self.components, data["trainable"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        ckpt.restore_rng(state["rng"], self.data_rng, self.torch_gen)
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(meta["step"])
        self.loss_sum, self.loss_count = float(meta["loss_sum"]), int(meta["loss_count"])
        self.started_at = float(meta.get("started_at", self.started_at))
        self.last_checkpoint = Path(path)
        self.reporter.log(f"resumed from {Path(path).name} at step {self.step}/{self.total_steps}")
