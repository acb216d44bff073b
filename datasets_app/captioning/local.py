"""Local captioning with transformers on a `captioning` worker: any image-text-to-text model in a
folder under CAPTION_MODELS_DIR (Florence-2, BLIP, BLIP-2, LLaVA/JoyCaption, Qwen-VL) through
`AutoModelForImageTextToText` + `AutoProcessor`, batched, on the GPU when there is one.

transformers 5 removed the `image-to-text` pipeline and `AutoModelForVision2Seq`; torch is imported
only here, and only when a local provider is built, so web nodes never load it."""

from __future__ import annotations

import io
import threading
from pathlib import Path

from django.conf import settings as django_settings

from datasets_app.captioning.base import (
    Availability,
    Caption,
    CaptionInput,
    FatalError,
    ImageError,
    ProviderSettings,
)

# Random or very small models can emit end-of-sequence at once; ask for a few real tokens.
MIN_NEW_TOKENS = 3
_cache: dict[tuple[str, str], tuple[object, object]] = {}
_cache_lock = threading.Lock()
# One generate() at a time per process: the model is shared by the run's threads, and batching
# (not threads) is what makes a local model fast.
_generate_lock = threading.Lock()


def models_dir() -> Path:
    return Path(django_settings.CAPTION_MODELS_DIR)


def resolve_model_dir(model: str) -> Path:
    """The model's folder, which must lie under CAPTION_MODELS_DIR: a team's provider must not make
    a worker read arbitrary paths."""
    if not model:
        raise FatalError("A local provider needs a model: the name of a folder under CAPTION_MODELS_DIR.")
    root = models_dir().resolve()
    path = (root / model).resolve()
    if path != root and root not in path.parents:
        raise FatalError(f"The model {model!r} is outside CAPTION_MODELS_DIR; name a folder inside it.")
    if not (path / "config.json").exists():
        raise FatalError(f"No model folder {model!r} under CAPTION_MODELS_DIR on this worker "
                         "(run `manage.py make_tiny_captioner` for the test model, or copy one there).")
    return path


def _load(path: Path, device: str):
    key = (str(path), device)
    with _cache_lock:
        if key not in _cache:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor

            torch.set_num_threads(django_settings.CAPTION_TORCH_THREADS)
            dtype = torch.float16 if device == "cuda" else torch.float32
            # Safetensors only and no remote code: loading a folder must never run its code.
            model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, use_safetensors=True,
                                                                trust_remote_code=False, local_files_only=True)
            processor = AutoProcessor.from_pretrained(path, trust_remote_code=False, local_files_only=True)
            _cache[key] = (model.to(device).eval(), processor)
        return _cache[key]


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class LocalProvider:
    def __init__(self, settings: ProviderSettings, api_key_env: str = "", client=None):
        self.settings = settings
        self.path = resolve_model_dir(settings.model)
        self.batch_size = max(1, int(settings.options.get("batch_size", settings.options.get("concurrency", 4))))
        self.device = _device()
        self.model, self.processor = _load(self.path, self.device)

    def _texts(self, prompt: str, count: int) -> list[str] | None:
        if not prompt:
            return None
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return [prompt] * count

    def caption_batch(self, items: list[CaptionInput], prompt: str) -> list:
        import torch
        from PIL import Image, UnidentifiedImageError

        images, results = [], [None] * len(items)
        for index, item in enumerate(items):
            try:
                with Image.open(io.BytesIO(item.data)) as img:
                    images.append((index, img.convert("RGB")))
            except (UnidentifiedImageError, OSError) as exc:
                results[index] = ImageError(f"the image could not be decoded ({exc})")
        if images:
            texts = self._texts(prompt, len(images))
            kwargs = {"images": [img for _, img in images], "return_tensors": "pt"}
            if texts is not None:
                kwargs["text"] = texts
                kwargs["padding"] = True
            inputs = self.processor(**kwargs).to(self.device)
            if self.device == "cuda":
                inputs = {k: (v.half() if v.is_floating_point() else v) for k, v in inputs.items()}
            with _generate_lock, torch.inference_mode():
                out = self.model.generate(**inputs, max_new_tokens=self.settings.max_tokens,
                                          min_new_tokens=MIN_NEW_TOKENS, do_sample=False)
            input_ids = inputs.get("input_ids")
            if input_ids is not None and out.shape[1] > input_ids.shape[1] and \
                    torch.equal(out[:, :input_ids.shape[1]], input_ids):
                out = out[:, input_ids.shape[1]:]  # decoder-only models echo the prompt
            decoded = self.processor.batch_decode(out, skip_special_tokens=True)
            model_name = Path(self.settings.model).name
            for (index, _), text in zip(images, decoded, strict=True):
                text = " ".join(text.split())
                results[index] = (Caption(text=text, confidence=None, model=model_name) if text
                                  else ImageError("the model produced an empty caption"))
        return results

    def check(self) -> Availability:
        return Availability(True, f"loaded on {self.device}")

    def close(self) -> None:
        pass


def check_local(model: str) -> Availability:
    """Availability without loading torch (the web node asks): is the folder there?"""
    try:
        resolve_model_dir(model)
    except FatalError as exc:
        return Availability(False, exc.message)
    return Availability(True, "model folder present (loaded on the captioning worker)")
