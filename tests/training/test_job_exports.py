"""A trained job's curves for other tools: the loss series as CSV, and a TensorBoard log read back
here with a TFRecord + protobuf reader written from the formats (not with our writer's code)."""

from __future__ import annotations

import csv
import io
import struct
import zipfile

import pytest
from PIL import Image

from training_app.models import ArtifactKind, JobStatus
from training_app.runner import execute_job
from training_app.services import submit_job

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = {"resolution": 64, "max_steps": 6, "batch_size": 2, "rank": 4, "learning_rate": 3e-3,
          "sample_every_n_steps": 3, "sample_prompts": ["shp, a square", "shp, a circle"]}


def crc32c_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
    return crc ^ 0xFFFFFFFF


def masked(data: bytes) -> int:
    crc = crc32c_bitwise(data)
    return ((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecords(data: bytes) -> list[bytes]:
    records, at = [], 0
    while at < len(data):
        header = data[at:at + 8]
        (length,), (length_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[at + 8:at + 12])
        assert length_crc == masked(header)
        body = data[at + 12:at + 12 + length]
        assert struct.unpack("<I", data[at + 12 + length:at + 16 + length])[0] == masked(body)
        records.append(body)
        at += 16 + length
    return records


def fields(message: bytes) -> dict[int, list]:
    """Protobuf wire format: varint (0), 64-bit (1), length-delimited (2), 32-bit (5)."""
    out: dict[int, list] = {}
    at = 0

    def varint():
        nonlocal at
        shift = value = 0
        while True:
            byte = message[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while at < len(message):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 1:
            value, at = message[at:at + 8], at + 8
        elif wire == 5:
            value, at = message[at:at + 4], at + 4
        else:
            size = varint()
            value, at = message[at:at + size], at + size
        out.setdefault(number, []).append(value)
    return out


def test_loss_csv_and_tensorboard_log_of_a_trained_job(member, outsider, dataset_a, tiny_base_model, api_for):
    job = submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", config=CONFIG)
    assert execute_job(str(job.uuid), worker_id="test-worker") == JobStatus.COMPLETED
    points = list(job.loss_points.order_by("step").values_list("step", "loss", "lr"))
    samples = list(job.artifacts.filter(kind=ArtifactKind.SAMPLE).order_by("step", "created_at"))
    assert [p[0] for p in points] == [1, 2, 3, 4, 5, 6] and len(samples) == 4  # 2 prompts at steps 3 and 6
    api = api_for(member)

    answer = api.get(f"/api/jobs/{job.uuid}/loss.csv")
    assert answer.status_code == 200 and answer["Content-Type"].startswith("text/csv")
    assert "attachment" in answer["Content-Disposition"] and answer["Content-Disposition"].endswith('-loss.csv"')
    rows = list(csv.DictReader(io.StringIO(answer.content.decode())))
    assert [int(r["step"]) for r in rows] == [p[0] for p in points]
    for i, (row, (_, loss, lr)) in enumerate(zip(rows, points, strict=True)):
        assert float(row["loss"]) == loss and float(row["learning_rate"]) == lr
        window = [p[1] for p in points[:i + 1]]  # fewer than 50 points: the mean of all so far
        assert float(row["smoothed_loss"]) == pytest.approx(sum(window) / len(window))

    answer = api.get(f"/api/jobs/{job.uuid}/tensorboard.zip")
    assert answer.status_code == 200 and answer["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    names = archive.namelist()
    events = [n for n in names if "/events.out.tfevents." in n]
    assert len(events) == 1 and any(n.endswith("/loss.csv") for n in names)
    records = [fields(r) for r in tfrecords(archive.read(events[0]))]
    assert records[0][3] == [b"brain.Event:2"]  # file_version first, as TensorBoard expects
    scalars: dict[str, list] = {}
    images = []
    for event in records[1:]:
        step = event[2][0]
        (value,) = [fields(v) for v in fields(event[5][0])[1]]
        tag = value[1][0].decode()
        if 2 in value:
            scalars.setdefault(tag, []).append((step, struct.unpack("<f", value[2][0])[0]))
        else:
            image = fields(value[4][0])
            images.append((tag, step, image[1][0], image[2][0], image[4][0]))
    assert scalars["loss/raw"] == [(s, pytest.approx(loss, rel=1e-6)) for s, loss, _ in points]
    assert scalars["learning_rate"] == [(s, pytest.approx(lr, rel=1e-6)) for s, _, lr in points]
    assert [s for s, _ in scalars["loss/smoothed"]] == [p[0] for p in points]
    assert [(tag, step) for tag, step, *_ in images] == [
        ("samples/prompt_0", 3), ("samples/prompt_1", 3), ("samples/prompt_0", 6), ("samples/prompt_1", 6)]
    for _, _, height, width, png in images:
        with Image.open(io.BytesIO(png)) as decoded:
            assert decoded.format == "PNG" and decoded.size == (width, height) == (64, 64)

    # Another team's member learns nothing: not even that the job exists.
    for path in ("loss.csv", "tensorboard.zip"):
        assert api_for(outsider).get(f"/api/jobs/{job.uuid}/{path}").status_code == 404
