"""OpenAI-compatible vision chat (`/v1/chat/completions`): the image as a `data:image/jpeg;base64`
URL in an `image_url` content part. One protocol covers vLLM (LLaVA, Qwen-VL), llama.cpp's server,
LM Studio, Ollama's `/v1`, the Hugging Face router and hosted GPT-4-class models; `base_url` ends
in `/v1`."""

from __future__ import annotations

import base64

import httpx

from datasets_app.captioning import http
from datasets_app.captioning.base import Availability, Caption, CaptionInput, ImageError, ProviderSettings

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
DEFAULT_PROMPT = "Describe this image in one detailed sentence for an image-generation training caption."
NAME = "OpenAI-compatible server"


class OpenAIProvider:
    batch_size = 1

    def __init__(self, settings: ProviderSettings, api_key_env: str = "", client: httpx.Client | None = None):
        self.settings = settings
        self.base = (settings.base_url or DEFAULT_BASE_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.client = client or http.make_client(settings.timeout, settings.api_key)

    def request_body(self, item: CaptionInput, prompt: str) -> dict:
        image_url = "data:image/jpeg;base64," + base64.b64encode(item.data).decode("ascii")
        return {
            "model": self.settings.model,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": prompt or DEFAULT_PROMPT},
                {"type": "image_url", "image_url": {"url": image_url}},
            ]}],
            "max_tokens": self.settings.max_tokens,
            "temperature": self.settings.temperature,
            "stream": False,
        }

    def caption(self, item: CaptionInput, prompt: str) -> Caption:
        response = http.post(self.client, f"{self.base}/chat/completions", NAME, self.api_key_env,
                             json=self.request_body(item, prompt))
        body = http.json_body(response, NAME)
        if isinstance(body, dict) and body.get("error"):
            raise ImageError(f"{NAME} answered with an error: {http.error_text(body)}")
        text = _message_text(body)
        if not text:
            raise ImageError(f"{NAME} sent an empty caption")
        model = body.get("model") if isinstance(body.get("model"), str) else self.settings.model
        return Caption(text=text, confidence=None, model=model or self.settings.model)

    def caption_batch(self, items: list[CaptionInput], prompt: str) -> list:
        return http.results_for(items, lambda item: self.caption(item, prompt))

    def check(self) -> Availability:
        availability, body = http.probe(self.client, f"{self.base}/models", NAME)
        if not availability.ok or not isinstance(body, dict) or not isinstance(body.get("data"), list):
            return availability
        ids = {m.get("id") for m in body["data"] if isinstance(m, dict)}
        if self.settings.model and self.settings.model not in ids:
            return Availability(False, f"reachable, but it serves no model {self.settings.model}")
        return Availability(True, "reachable, model present" if self.settings.model else "reachable")

    def close(self) -> None:
        self.client.close()


def _message_text(body) -> str:
    """choices[0].message.content, which some servers send as a list of text parts."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content.strip() if isinstance(content, str) else ""
