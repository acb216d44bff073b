"""The shapes of the layers a network adapts, from a model's published config, without torch or weights.

Used by the portal's estimates (file size, adapter memory): a layer is ``(target, in, out, kernel)``, named by
the module suffix ``networks.py`` targets, and :func:`adapter_parameters` counts what each network stores for
it, as peft builds it (LoKr's factorisation is peft's ``factorization``). A test checks the count against the
files the trainer writes for the tiny models.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .networks import text_encoder_targets, unet_targets

# The published UNet configs (diffusers' unet/config.json of SD 1.5 and SDXL base) and CLIP text encoders.
UNETS = {
    "sd15": {"block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2, "cross_attention_dim": 768,
             "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
             "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, "transformer_layers_per_block": 1},
    "sdxl": {"block_out_channels": (320, 640, 1280), "layers_per_block": 2, "cross_attention_dim": 2048,
             "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
             "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
             "transformer_layers_per_block": (1, 2, 10)},
}
TEXT_ENCODERS = {"sd15": ((768, 3072, 12),), "sdxl": ((768, 3072, 12), (1280, 5120, 32))}  # hidden, mlp, layers

Layer = tuple[str, int, int, int]  # target suffix, in features/channels, out features/channels, kernel size


def _resnet(cin: int, cout: int, temb: int) -> Iterator[Layer]:
    yield "conv1", cin, cout, 3
    yield "time_emb_proj", temb, cout, 1
    yield "conv2", cout, cout, 3
    if cin != cout:
        yield "conv_shortcut", cin, cout, 1


def _transformer(dim: int, cross: int, depth: int) -> Iterator[Layer]:
    yield "proj_in", dim, dim, 1
    for _ in range(depth):
        for name in ("to_q", "to_k", "to_v", "to_out.0"):
            yield name, dim, dim, 1
        yield "to_q", dim, dim, 1
        yield "to_k", cross, dim, 1
        yield "to_v", cross, dim, 1
        yield "to_out.0", dim, dim, 1
        yield "ff.net.0.proj", dim, 8 * dim, 1  # GEGLU: two halves of 4*dim
        yield "ff.net.2", 4 * dim, dim, 1
    yield "proj_out", dim, dim, 1


def unet_layers(config: Mapping[str, Any]) -> Iterator[Layer]:
    """Every linear/conv layer a target preset can name, following diffusers' UNet2DConditionModel layout."""
    channels, lpb, cross = config["block_out_channels"], config["layers_per_block"], config["cross_attention_dim"]
    blocks = len(channels)
    depth = config.get("transformer_layers_per_block", 1)
    depth = (depth,) * blocks if isinstance(depth, int) else tuple(depth)
    temb = 4 * channels[0]
    cin = channels[0]
    for b, kind in enumerate(config["down_block_types"]):
        for _ in range(lpb):
            yield from _resnet(cin, channels[b], temb)
            cin = channels[b]
            if "CrossAttn" in kind:
                yield from _transformer(channels[b], cross, depth[b])
        if b < blocks - 1:
            yield "downsamplers.0.conv", channels[b], channels[b], 3
    yield from _resnet(channels[-1], channels[-1], temb)
    yield from _transformer(channels[-1], cross, depth[-1])
    yield from _resnet(channels[-1], channels[-1], temb)
    rev, rev_depth = channels[::-1], depth[::-1]
    prev = rev[0]
    for x, kind in enumerate(config["up_block_types"]):
        skip_in = rev[min(x + 1, blocks - 1)]
        for i in range(lpb + 1):
            skip = skip_in if i == lpb else rev[x]
            yield from _resnet((prev if i == 0 else rev[x]) + skip, rev[x], temb)
            if "CrossAttn" in kind:
                yield from _transformer(rev[x], cross, rev_depth[x])
        prev = rev[x]
        if x < blocks - 1:
            yield "upsamplers.0.conv", rev[x], rev[x], 3


def text_encoder_layers(hidden: int, mlp: int, layers: int) -> Iterator[Layer]:
    for _ in range(layers):
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            yield name, hidden, hidden, 1
        yield "fc1", hidden, mlp, 1
        yield "fc2", mlp, hidden, 1


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """peft's LoKr split of ``dimension`` into ``m <= n`` (its ``lokr.layer.factorization``)."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    factor = dimension if factor == -1 else factor
    m, n = 1, dimension
    while m < n:
        new_m = m + 1
        while dimension % new_m:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > m + n or new_m > factor:
            break
        m, n = new_m, new_n
    return (n, m) if m > n else (m, n)


def layer_parameters(cfg: Any, cin: int, cout: int, kernel: int) -> int:
    """Trainable numbers one layer stores for ``cfg``'s network (the 3x3 convolutions at the conv rank)."""
    r = cfg.effective_conv_rank if kernel > 1 else cfg.rank
    flat_in = cin * kernel * kernel
    if cfg.network in ("lora", "locon"):
        return r * (flat_in + cout) + (cout if cfg.dora else 0)
    if cfg.network == "loha":
        return 2 * r * (flat_in + cout)
    out_l, out_k = factorization(cout, cfg.factor)
    in_m, in_n = factorization(cin, cfg.factor)
    w1 = out_l * in_m
    full_w2 = r >= max(out_k, in_n) / 2
    w2 = out_k * in_n * kernel * kernel if full_w2 else r * (out_k + in_n * kernel * kernel)
    return w1 + w2


def adapted_layers(cfg: Any, family: str, unet_config: Mapping[str, Any] | None = None,
                   encoders: tuple[tuple[int, int, int], ...] | None = None) -> list[Layer]:
    """The layers ``cfg`` adapts on a family's published model (or the given UNet config / text encoders)."""
    targets = unet_targets(cfg.target_layers, cfg.network, cfg.custom_target_modules)
    out = [layer for layer in unet_layers(unet_config or UNETS[family]) if layer[0] in targets]
    if cfg.train_text_encoder:
        te_targets = text_encoder_targets(cfg.target_layers)
        for spec in encoders or TEXT_ENCODERS[family]:
            out += [layer for layer in text_encoder_layers(*spec) if layer[0] in te_targets]
    return out


def adapter_parameters(cfg: Any, family: str, **model: Any) -> int:
    """Trainable adapter numbers of ``cfg`` on ``family``'s model."""
    return sum(layer_parameters(cfg, cin, cout, k) for _, cin, cout, k in adapted_layers(cfg, family, **model))


def materialised_weights(cfg: Any, family: str, **model: Any) -> int:
    """Numbers of the full-size weight updates LoHa and LoKr build per adapted layer each step and keep for the
    backward pass (LoRA applies its factors to the activations; DoRA's weight norm is detached and transient)."""
    if cfg.network in ("lora", "locon"):
        return 0
    return sum(cin * cout * k * k for _, cin, cout, k in adapted_layers(cfg, family, **model))
