"""Hugging Face image-to-text (BLIP-2 style): POST the raw image with a bearer token, read
`[{"generated_text": ...}]`. The base URL is an Inference Endpoint or any server speaking this shape;
`{model}` in it is replaced by the model name. A 503 "model is loading" carries `estimated_time`,
which the retry honours. Raw-bytes requests carry no prompt, so the prompt is not sent."""

from __future__ import annotations

import httpx

from datasets_app.captioning import http
from datasets_app.captioning.base import Availability, Caption, CaptionInput, ImageError, ProviderSettings

DEFAULT_MODEL = "Salesforce/blip2-opt-2.7b"
DEFAULT_BASE_URL = "https://router.huggingface.co/hf-inference/models/{model}"
NAME = "Hugging Face endpoint"


class HuggingFaceProvider:
    batch_size = 1

    def __init__(self, settings: ProviderSettings, api_key_env: str = "", client: httpx.Client | None = None):
        self.settings = settings
        self.model = settings.model or DEFAULT_MODEL
        self.url = (settings.base_url or DEFAULT_BASE_URL).replace("{model}", self.model)
        self.api_key_env = api_key_env
        self.client = client or http.make_client(settings.timeout, settings.api_key)

    def caption(self, item: CaptionInput, prompt: str) -> Caption:
        response = http.post(self.client, self.url, NAME, self.api_key_env, content=item.data,
                             headers={"Content-Type": "image/jpeg", "Accept": "application/json"})
        body = http.json_body(response, NAME)
        first = body[0] if isinstance(body, list) and body else body
        if isinstance(first, dict) and "error" in first and "generated_text" not in first:
            raise ImageError(f"{NAME} answered with an error: {http.error_text(first)}")
        text = first.get("generated_text") if isinstance(first, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise ImageError(f"{NAME} sent an empty caption")
        score = first.get("score")
        return Caption(text=text.strip(), confidence=float(score) if isinstance(score, int | float) else None,
                       model=self.model)

    def caption_batch(self, items: list[CaptionInput], prompt: str) -> list:
        return http.results_for(items, lambda item: self.caption(item, prompt))

    def check(self) -> Availability:
        # Endpoints answer GET with 405 (POST only) or a status page; either proves it is there.
        try:
            response = self.client.get(self.url, timeout=5.0)
        except httpx.HTTPError as exc:
            return Availability(False, f"unreachable ({type(exc).__name__})")
        if response.status_code in (401, 403):
            return Availability(False, f"the server refused the API key ({response.status_code})")
        if response.status_code == 404:
            return Availability(False, f"no model {self.model} at this URL")
        if response.status_code >= 500 and response.status_code != 503:
            return Availability(False, f"answered {response.status_code}")
        return Availability(True, "reachable" if response.status_code != 503 else "reachable (model loading)")

    def close(self) -> None:
        self.client.close()
