"""Tiny model builder, offline loading (folder and single file) and the LDM single-file writer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training_app.trainer import ModelLoadError, train
from training_app.trainer.config import ModelSpec
from training_app.trainer.models import load_model
from training_app.trainer.tiny import build_tiny_model, folder_size_bytes


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_tiny_model_loads_offline(family: str, request: pytest.FixtureRequest) -> None:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    path = request.getfixturevalue(f"tiny_{family}")
    assert 1_000_000 < folder_size_bytes(path) < 10_000_000
    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    pipe = cls.from_pretrained(str(path), local_files_only=True)
    assert pipe.unet.config.block_out_channels == [32, 64] or tuple(pipe.unet.config.block_out_channels) == (
        32,
        64,
    )
    assert 2 ** (len(pipe.vae.config.block_out_channels) - 1) == 8  # real-SD latent downsampling
    assert (path / "tokenizer" / "vocab.json").is_file() and (path / "tokenizer" / "merges.txt").is_file()
    ids = pipe.tokenizer("a photo of the cat").input_ids
    assert ids[0] == pipe.tokenizer.bos_token_id and ids[-1] == pipe.tokenizer.eos_token_id
    loaded = load_model(ModelSpec(path, family))
    assert loaded.family == family and len(loaded.text_encoders) == (2 if family == "sdxl" else 1)


def test_tiny_model_is_deterministic(tmp_path: Path, tiny_sd15: Path) -> None:
    from safetensors.torch import load_file

    again = build_tiny_model(tmp_path / "again", "sd15", seed=0)
    other = build_tiny_model(tmp_path / "other", "sd15", seed=1)
    a = load_file(str(tiny_sd15 / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(again / "unet" / "diffusion_pytorch_model.safetensors"))
    c = load_file(str(other / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_single_file_roundtrip_and_training(tmp_path: Path, tiny_sd15: Path, make_spec) -> None:
    from training_app.trainer.single_file import write_single_file_checkpoint

    ckpt = write_single_file_checkpoint(tiny_sd15, tmp_path / "tiny.safetensors")
    spec = ModelSpec(ckpt, "sd15", config_dir=tiny_sd15)
    assert spec.single_file is True
    single = load_model(spec)
    folder = load_model(ModelSpec(tiny_sd15, "sd15"))
    for name in ("unet", "vae"):
        sa, sb = getattr(single, name).state_dict(), getattr(folder, name).state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    te_a, te_b = single.text_encoders[0].state_dict(), folder.text_encoders[0].state_dict()
    assert all(torch.equal(te_a[k], te_b[k]) for k in te_b)

    base = make_spec(max_steps=2)
    from training_app.trainer.config import TrainSpec

    from_file = train(TrainSpec(spec, base.items, base.config, tmp_path / "a", device="cpu"))
    from_folder = train(TrainSpec(base.model, base.items, base.config, tmp_path / "b", device="cpu"))
    # Same weights; attention kernels may differ in the last float bit between the two loaders.
    assert from_file.losses == pytest.approx(from_folder.losses, abs=1e-5)

    with pytest.raises(ModelLoadError, match="needs a local diffusers folder"):
        load_model(ModelSpec(ckpt, "sd15"))
    with pytest.raises(ModelLoadError, match="is an sd15 checkpoint but the job says sdxl"):
        load_model(ModelSpec(ckpt, "sdxl", config_dir=tiny_sd15))


def run_at_the_same_instant(work, count: int = 2, timeout: float = 300) -> list[object]:
    """Run `work(index)` in `count` threads released together by a barrier; return the results in
    index order, or raise the first error a thread hit."""
    import threading

    barrier = threading.Barrier(count)
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not errors, errors
    assert sorted(results) == list(range(count))
    return [results[i] for i in range(count)]


def test_two_trainings_starting_at_the_same_instant_in_one_process_both_succeed(make_spec, tmp_path):
    from training_app.trainer import train
    from training_app.trainer.reporter import NullReporter

    for attempt in range(3):
        specs = [make_spec(out=tmp_path / f"run-{attempt}-{i}", max_steps=2) for i in range(2)]
        run_at_the_same_instant(lambda i, specs=specs: train(specs[i], NullReporter()))


def test_two_threads_loading_the_model_at_the_same_instant_both_succeed(tiny_sd15):
    from training_app.trainer.config import ModelSpec
    from training_app.trainer.models import load_model

    for _ in range(3):
        run_at_the_same_instant(lambda i: load_model(ModelSpec(tiny_sd15, "sd15")), timeout=120)
