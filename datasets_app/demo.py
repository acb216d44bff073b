"""Demo content: a small "demo-shapes" dataset of coloured shapes drawn with Pillow, approved and captioned."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from datasets_app.ingest import Entry, ingest_entries
from datasets_app.models import CaptionProvider, Dataset, DatasetImage, ProviderType, ReviewState
from datasets_app.services import set_review_state

NAME = "demo-shapes"
DEMO_PROVIDER = "Template"
DEMO_TEMPLATE = "a photo of {trigger}, {filename}"
TRIGGER = "shp"
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 70), "blue": (40, 80, 220), "yellow": (240, 200, 30),
           "purple": (140, 60, 180), "white": (245, 245, 245)}
SHAPES = [("circle", "red", "blue"), ("square", "yellow", "purple"), ("triangle", "green", "white"),
          ("circle", "white", "green"), ("square", "blue", "yellow"), ("triangle", "red", "white"),
          ("circle", "purple", "yellow"), ("square", "green", "red"), ("triangle", "blue", "yellow"),
          ("circle", "yellow", "blue"), ("square", "white", "purple"), ("triangle", "purple", "green")]


def draw_shape(shape: str, colour: str, background: str, size: int = 128) -> bytes:
    img = Image.new("RGB", (size, size), COLOURS[background])
    draw = ImageDraw.Draw(img)
    m = size // 5
    if shape == "circle":
        draw.ellipse([m, m, size - m, size - m], fill=COLOURS[colour])
    elif shape == "square":
        draw.rectangle([m, m, size - m, size - m], fill=COLOURS[colour])
    else:
        draw.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=COLOURS[colour])
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def seed_demo(team, user, out) -> None:
    """Create (or top up) the demo dataset; running it again adds nothing new."""
    # 64 px: the demo trains the generated tiny models, which take seconds there on a laptop CPU.
    dataset, _ = Dataset.objects.get_or_create(team=team, name=NAME, defaults={
        "trigger_word": TRIGGER, "created_by": user, "default_resolution": 64,
        "description": "Twelve coloured shapes drawn by the demo seeder."})
    entries = []
    for index, (shape, colour, background) in enumerate(SHAPES):
        stem = f"{index:02d}-{colour}-{shape}"
        data = draw_shape(shape, colour, background)
        caption = f"{TRIGGER}, a {colour} {shape} on a {background} background".encode()
        entries.append(Entry(name=f"{stem}.png", path=f"{stem}.png", read=lambda data=data: data))
        entries.append(Entry(name=f"{stem}.txt", path=f"{stem}.txt", read=lambda caption=caption: caption))
    report = ingest_entries(dataset, entries, user=user)
    set_review_state(DatasetImage.objects.filter(dataset=dataset), ReviewState.APPROVED, user)
    # A captioner that needs nothing set up, so a newcomer can auto-caption the demo dataset at once.
    provider, created = CaptionProvider.objects.get_or_create(team=team, name=DEMO_PROVIDER, defaults={
        "type": ProviderType.SIMPLE, "prompt": DEMO_TEMPLATE, "concurrency": 4})
    out.write(f"caption provider {provider.name}: {'added' if created else 'exists'}\n")
    out.write(f"dataset {NAME}: {dataset.images.count()} images ({len(report.added)} new)\n")
