"""Ollama's native API: `/api/generate` with bare base64 `images`, `stream: false`, `options`."""

from __future__ import annotations

import base64

import httpx

from datasets_app.captioning import http
from datasets_app.captioning.base import Availability, Caption, CaptionInput, ImageError, ProviderSettings

DEFAULT_BASE_URL = "http://127.0.0.1:11434"
DEFAULT_PROMPT = "Describe this image in one detailed sentence."
NAME = "Ollama"


class OllamaProvider:
    batch_size = 1

    def __init__(self, settings: ProviderSettings, api_key_env: str = "", client: httpx.Client | None = None):
        self.settings = settings
        self.base = (settings.base_url or DEFAULT_BASE_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.client = client or http.make_client(settings.timeout, settings.api_key)

    def request_body(self, item: CaptionInput, prompt: str) -> dict:
        return {
            "model": self.settings.model,
            "prompt": prompt or DEFAULT_PROMPT,
            "images": [base64.b64encode(item.data).decode("ascii")],
            "stream": False,
            "options": {"temperature": self.settings.temperature, "num_predict": self.settings.max_tokens,
                        **self.settings.options},
        }

    def caption(self, item: CaptionInput, prompt: str) -> Caption:
        response = http.post(self.client, f"{self.base}/api/generate", NAME, self.api_key_env,
                             json=self.request_body(item, prompt))
        body = http.json_body(response, NAME)
        if not isinstance(body, dict):
            raise ImageError(f"{NAME} sent an answer of an unexpected shape")
        if body.get("error"):
            raise ImageError(f"{NAME} answered with an error: {http.error_text(body)}")
        text = body.get("response")
        if not isinstance(text, str) or not text.strip():
            raise ImageError(f"{NAME} sent an empty caption")
        return Caption(text=text.strip(), confidence=None, model=body.get("model") or self.settings.model)

    def caption_batch(self, items: list[CaptionInput], prompt: str) -> list:
        return http.results_for(items, lambda item: self.caption(item, prompt))

    def check(self) -> Availability:
        availability, body = http.probe(self.client, f"{self.base}/api/tags", NAME)
        if not availability.ok or not isinstance(body, dict) or not isinstance(body.get("models"), list):
            return availability
        names = {m.get("name") for m in body["models"] if isinstance(m, dict)}
        wanted = self.settings.model
        if wanted and wanted not in names and f"{wanted}:latest" not in names:
            return Availability(False, f"reachable, but model {wanted} is not pulled (ollama pull {wanted})")
        return Availability(True, "reachable, model present" if wanted else "reachable")

    def close(self) -> None:
        self.client.close()
