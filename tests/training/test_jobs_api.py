"""The jobs API: submit, read, cancel, retry, files; every endpoint refuses other teams."""

from __future__ import annotations

import uuid

import pytest

from training_app import lifecycle
from training_app.models import Artifact, ArtifactKind, JobStatus, LossPoint, TrainingJob

pytestmark = pytest.mark.django_db

SMALL = {"resolution": 64, "max_steps": 6, "batch_size": 2}


@pytest.fixture
def submitted(api_for, member, dataset_a, tiny_base_model):
    response = api_for(member).post("/api/jobs", {"dataset_id": str(dataset_a.uuid), "base_model": "tiny-sd15",
                                                  "preset": "fast", "config": SMALL})
    assert response.status_code == 201, response.content
    return response.json()


def test_submit_freezes_config_and_dataset_snapshot(submitted, dataset_a):
    assert submitted["status"] == "queued"
    assert submitted["config"]["rank"] == 8 and submitted["config"]["max_steps"] == 6
    assert submitted["config"]["trigger_word"] == "shp"
    assert submitted["total_steps"] == 6 and submitted["image_count"] == 4
    assert submitted["queue_position"] == 1
    captions = {i["caption"] for i in submitted["snapshot"]["images"]}
    image = dataset_a.images.first()
    from datasets_app.captions import set_caption

    set_caption(image, "edited later", user=None)
    job = TrainingJob.objects.get(uuid=submitted["id"])
    assert {i["caption"] for i in job.snapshot["images"]} == captions


def test_bad_config_is_422_with_field_errors(api_for, member, dataset_a, tiny_base_model):
    response = api_for(member).post("/api/jobs", {"dataset_id": str(dataset_a.uuid), "base_model": "tiny-sd15",
                                                  "config": {"rank": 5, "learning_rate": -1}})
    assert response.status_code == 422
    body = response.json()
    assert "rank must be one of 4, 8, 16, 32, 64, 128" in body["detail"]
    assert {tuple(e["loc"]) for e in body["errors"]} == {("config", "rank"), ("config", "learning_rate")}
    assert not TrainingJob.objects.exists()


def test_unknown_base_model_and_backend_are_422(api_for, member, dataset_a, tiny_base_model):
    api = api_for(member)
    base = {"dataset_id": str(dataset_a.uuid), "base_model": "tiny-sd15"}
    assert api.post("/api/jobs", {**base, "base_model": "nope"}).status_code == 422
    assert api.post("/api/jobs", {**base, "backend": "nope"}).status_code == 422


def test_other_teams_dataset_is_404(api_for, outsider, dataset_a, tiny_base_model):
    response = api_for(outsider).post("/api/jobs", {"dataset_id": str(dataset_a.uuid), "base_model": "tiny-sd15"})
    assert response.status_code == 404


def test_viewer_cannot_submit_or_cancel(api_for, viewer, submitted, dataset_a):
    api = api_for(viewer)
    assert api.post("/api/jobs", {"dataset_id": str(dataset_a.uuid), "base_model": "tiny-sd15"}).status_code == 403
    assert api.get(f"/api/jobs/{submitted['id']}").status_code == 200
    assert api.post(f"/api/jobs/{submitted['id']}/cancel").status_code == 403


def test_every_job_endpoint_refuses_other_teams(api_for, outsider, submitted):
    job = TrainingJob.objects.get(uuid=submitted["id"])
    lifecycle.claim(job.pk, "w")
    api = api_for(outsider)
    job_id = submitted["id"]
    paths = [("get", f"/api/jobs/{job_id}"), ("post", f"/api/jobs/{job_id}/cancel"),
             ("post", f"/api/jobs/{job_id}/retry"), ("get", f"/api/jobs/{job_id}/events"),
             ("get", f"/api/jobs/{job_id}/artifacts"), ("get", f"/api/jobs/{job_id}/weights?layout=kohya"),
             ("get", f"/api/jobs/{job_id}/artifacts/{uuid.uuid4()}/download")]
    for method, path in paths:
        response = getattr(api, method)(path)
        assert response.status_code == 404, (path, response.status_code)
    assert api.post(f"/api/jobs/{job_id}/actions", {"action": "sample"}).status_code == 404
    assert api.get("/api/jobs").json() == []
    assert TrainingJob.objects.get(pk=job.pk).status == JobStatus.RUNNING


def test_cancel_queued_job_then_retry(api_for, member, submitted):
    api = api_for(member)
    cancelled = api.post(f"/api/jobs/{submitted['id']}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert api.post(f"/api/jobs/{submitted['id']}/cancel").status_code == 409
    retried = api.post(f"/api/jobs/{submitted['id']}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "queued"


def test_list_filters_by_status(api_for, member, submitted):
    api = api_for(member)
    assert [j["id"] for j in api.get("/api/jobs?status=queued").json()] == [submitted["id"]]
    assert api.get("/api/jobs?status=running").json() == []
    assert api.get("/api/jobs?status=bogus").status_code == 422


def test_actions_only_for_running_jobs(api_for, member, submitted):
    api = api_for(member)
    assert api.post(f"/api/jobs/{submitted['id']}/actions", {"action": "sample"}).status_code == 422
    job = TrainingJob.objects.get(uuid=submitted["id"])
    lifecycle.claim(job.pk, "w")
    assert api.post(f"/api/jobs/{submitted['id']}/actions", {"action": "sample"}).status_code == 202
    assert api.post(f"/api/jobs/{submitted['id']}/actions", {"action": "explode"}).status_code == 422
    job.refresh_from_db()
    assert job.requested_actions == ["sample"]


def test_events_downsample_long_curves(api_for, member, submitted):
    from django.utils import timezone

    job = TrainingJob.objects.get(uuid=submitted["id"])
    now = timezone.now()
    LossPoint.objects.bulk_create(LossPoint(job=job, step=s, loss=1.0 / s, lr=1e-4, at=now) for s in range(1, 10_001))
    body = api_for(member).get(f"/api/jobs/{submitted['id']}/events?max_points=600").json()
    steps = [p["step"] for p in body["loss_points"]]
    assert len(steps) <= 700 and steps[0] == 1 and steps[-1] == 10_000 and steps == sorted(steps)


def test_weights_and_artifacts_download(api_for, member, submitted, settings):
    from pathlib import Path

    job = TrainingJob.objects.get(uuid=submitted["id"])
    folder = Path(settings.MEDIA_ROOT) / job.output_dir_name()
    folder.mkdir(parents=True)
    (folder / "lora.safetensors").write_bytes(b"weights")
    Artifact.objects.create(job=job, kind=ArtifactKind.LORA_KOHYA, path=f"{job.output_dir_name()}/lora.safetensors",
                            size_bytes=7)
    api = api_for(member)
    response = api.get(f"/api/jobs/{submitted['id']}/weights?layout=kohya")
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"weights"
    # Saved under the job's name and short id, whatever the file is called on disk.
    assert job.name == "shapes · fast"
    stem = f"shapes-fast-{job.uuid.hex[:8]}"
    assert response["Content-Disposition"] == f'attachment; filename="{stem}.safetensors"'
    assert api.get(f"/api/jobs/{submitted['id']}/weights?layout=diffusers").status_code == 404
    assert api.get(f"/api/jobs/{submitted['id']}/weights?layout=ckpt").status_code == 422
    listed = api.get(f"/api/jobs/{submitted['id']}/artifacts").json()
    assert listed[0]["filename"] == f"{stem}.safetensors" and listed[0]["size_bytes"] == 7


def test_presets_backends_and_base_models_are_listed(api_for, member, tiny_base_model):
    api = api_for(member)
    presets = {p["name"]: p for p in api.get("/api/presets").json()}
    assert set(presets) == {"sd15", "sdxl", "fast", "high_quality", "style", "flux"}
    assert presets["sdxl"]["config"]["resolution"] == 1024 and presets["sd15"]["config"]["rank"] == 16
    backends = api.get("/api/backends").json()
    assert backends[0]["name"] == "local" and backends[0]["available"] is True
    assert [m["name"] for m in api.get("/api/base-models").json()] == ["tiny-sd15"]


def test_estimate_for_a_dataset(api_for, member, dataset_a, tiny_base_model):
    response = api_for(member).post("/api/estimate", {"dataset_id": str(dataset_a.uuid), "base_model": "tiny-sd15",
                                                      "config": {"resolution": 64, "epochs": 2, "batch_size": 2}})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["total_steps"] == 4 and body["image_count"] == 4 and body["family"] == "sd15"
    assert body["estimated_cost_usd"] is None


def test_estimate_of_another_teams_dataset_is_404(api_for, outsider, dataset_a):
    assert api_for(outsider).post("/api/estimate", {"dataset_id": str(dataset_a.uuid)}).status_code == 404


def test_job_file_names_are_readable_and_unique_per_job(member, dataset_a, tiny_base_model):
    from training_app.artifacts import job_file_stem
    from training_app.services import submit_job

    first, second = (submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", preset="fast",
                                name="demo-shapes · fast") for _ in range(2))
    assert job_file_stem(first) == f"demo-shapes-fast-{first.uuid.hex[:8]}"
    assert job_file_stem(first) != job_file_stem(second)
    nameless = submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", name="···")
    assert job_file_stem(nameless) == f"lora-{nameless.uuid.hex[:8]}"


def test_backends_say_whether_their_workers_have_a_gpu(api_for, member):
    from django.utils import timezone

    from lorasite.core.models import WorkerNode

    now = timezone.now()
    WorkerNode.objects.create(name="box:1", hostname="box", queues=["gpu"], device="cpu", started_at=now,
                              last_seen=now)
    local = api_for(member).get("/api/backends").json()[0]
    assert local["detail"] == "1 CPU worker online (no GPU: training is slow)"
    WorkerNode.objects.create(name="gpu1:2", hostname="gpu1", queues=["gpu"], device="cuda:0", started_at=now,
                              last_seen=now)
    assert api_for(member).get("/api/backends").json()[0]["detail"] == "2 workers online (1 GPU, 1 CPU)"
