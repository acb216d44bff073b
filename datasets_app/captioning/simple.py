"""A template captioner for when nothing else is set up: `"a photo of {trigger}"`, with
`{trigger}`, `{filename}` (without extension) and `{dataset}`. No network, no model."""

from __future__ import annotations

import string
from pathlib import PurePosixPath

from datasets_app.captioning.base import Availability, Caption, CaptionInput, FatalError, ProviderSettings

DEFAULT_TEMPLATE = "a photo of {trigger}"
FIELDS = ("trigger", "filename", "dataset")


def check_template(template: str) -> None:
    """Refuse unknown placeholders and broken braces before a run starts."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise FatalError(f"The template {template!r} is malformed ({exc}); use {{trigger}}, {{filename}}, "
                         "{dataset}.") from None
    unknown = [n for n in names if n not in FIELDS]
    if unknown:
        raise FatalError(f"The template names {', '.join(map(repr, unknown))}; it may use only "
                         + ", ".join(f"{{{f}}}" for f in FIELDS) + ".")


def render(template: str, item: CaptionInput) -> str:
    stem = PurePosixPath(item.filename).stem.replace("_", " ").replace("-", " ")
    text = template.format(trigger=item.trigger, filename=stem, dataset=item.dataset)
    return " ".join(text.split())


class SimpleProvider:
    batch_size = 1

    def __init__(self, settings: ProviderSettings, api_key_env: str = "", client=None):
        self.settings = settings

    def caption_batch(self, items: list[CaptionInput], prompt: str) -> list:
        template = prompt or self.settings.prompt or DEFAULT_TEMPLATE
        check_template(template)
        return [Caption(text=render(template, item), confidence=None, model="template") for item in items]

    def check(self) -> Availability:
        return Availability(True, "built in")

    def close(self) -> None:
        pass
