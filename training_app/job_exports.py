"""A job's curves for other tools: the loss series as CSV, and a TensorBoard log (loss, smoothed loss,
learning rate and the sample images) as a zip that `tensorboard --logdir` reads once unpacked.

Both are made on request from what the portal stores, so every job has them, local or remote, running
or finished, and nothing is written twice during training.
"""

from __future__ import annotations

import csv
import io
import tempfile
import zipfile
from collections import deque
from pathlib import Path

from django.conf import settings
from PIL import Image

from training_app.artifacts import job_file_stem
from training_app.models import ArtifactKind, TrainingJob
from training_app.reporting import AVG_WINDOW
from training_app.tensorboard import ImageEntry, Scalar, write_event_file

CSV_COLUMNS = ["step", "loss", "smoothed_loss", "learning_rate", "time"]


def loss_rows(job: TrainingJob) -> list[tuple[int, float, float, float | None, float]]:
    """(step, loss, smoothed loss, lr, unix time) per stored point; smoothed is the mean of the last
    AVG_WINDOW losses, the job page's "avg" figure."""
    window: deque[float] = deque(maxlen=AVG_WINDOW)
    rows = []
    for step, loss, lr, at in job.loss_points.order_by("step").values_list("step", "loss", "lr", "at").iterator():
        window.append(loss)
        rows.append((step, loss, sum(window) / len(window), lr, at.timestamp()))
    return rows


def loss_csv(job: TrainingJob) -> str:
    return _csv_text(loss_rows(job))


def _csv_text(rows: list[tuple[int, float, float, float | None, float]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for step, loss, smoothed, lr, at in rows:
        writer.writerow([step, repr(loss), repr(smoothed), "" if lr is None else repr(lr), f"{at:.3f}"])
    return out.getvalue()


def _sample_images(job: TrainingJob) -> list[ImageEntry]:
    root = Path(settings.MEDIA_ROOT).resolve()
    entries = []
    samples = job.artifacts.filter(kind=ArtifactKind.SAMPLE).order_by("step", "created_at")
    prompts: dict[str, int] = {}
    for artifact in samples:
        path = (root / artifact.path).resolve()
        if root not in path.parents or not path.is_file():
            continue  # a sample whose file is gone is left out, not an error
        with Image.open(path) as image:
            width, height = image.size
            if image.format == "PNG":  # the trainer's samples are: send their bytes as they are
                png = path.read_bytes()
            else:
                buffer = io.BytesIO()
                image.convert("RGB").save(buffer, format="PNG")
                png = buffer.getvalue()
        # One image series per prompt, in the order the prompts first appear.
        index = prompts.setdefault(artifact.prompt, len(prompts))
        entries.append(ImageEntry(tag=f"samples/prompt_{index}", step=artifact.step or 0, png=png,
                                  width=width, height=height, wall_time=artifact.created_at.timestamp()))
    return entries


def tensorboard_zip(job: TrainingJob) -> tuple[str, bytes]:
    """(file name, zip bytes): `<job>/events.out.tfevents.*` plus `<job>/loss.csv`."""
    stem = job_file_stem(job)
    rows = loss_rows(job)
    scalars = []
    for step, loss, smoothed, lr, at in rows:
        scalars += [Scalar("loss/raw", step, loss, at), Scalar("loss/smoothed", step, smoothed, at)]
        if lr is not None:
            scalars.append(Scalar("learning_rate", step, lr, at))
    start = (job.started_at or job.created_at).timestamp()
    with tempfile.TemporaryDirectory() as tmp:
        event_file = write_event_file(Path(tmp), scalars, _sample_images(job), start_time=start)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(event_file, f"{stem}/{event_file.name}")
            archive.writestr(f"{stem}/loss.csv", _csv_text(rows))
    return f"{stem}-tensorboard.zip", buffer.getvalue()
