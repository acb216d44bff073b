"""Provider types and how to build one from its settings."""

from __future__ import annotations

from datasets_app.captioning.base import FatalError, Provider, ProviderSettings
from datasets_app.captioning.hf import HuggingFaceProvider
from datasets_app.captioning.ollama import OllamaProvider
from datasets_app.captioning.openai import OpenAIProvider
from datasets_app.captioning.simple import SimpleProvider

TYPES = ("hf", "openai", "ollama", "local", "simple")
# Types that send images over the network (and so need a base URL, maybe a key).
HTTP_TYPES = ("hf", "openai", "ollama")


def build_provider(settings: ProviderSettings, api_key_env: str = "") -> Provider:
    if settings.type == "hf":
        return HuggingFaceProvider(settings, api_key_env)
    if settings.type == "openai":
        return OpenAIProvider(settings, api_key_env)
    if settings.type == "ollama":
        return OllamaProvider(settings, api_key_env)
    if settings.type == "simple":
        return SimpleProvider(settings)
    if settings.type == "local":
        from datasets_app.captioning.local import LocalProvider  # torch only on captioning workers

        return LocalProvider(settings)
    raise FatalError(f"Unknown provider type {settings.type!r}; use one of {', '.join(TYPES)}.")
