"""Latency of `GET /api/datasets/{id}/images` on a 2,000-image dataset (in-process Django client,
bearer-token auth, the full middleware and ninja stack; no network).

    .venv/bin/python benchmarks/images_api.py [--images 2000 --requests 300 --page-size 50]
    DATABASE_URL=postgres://user@127.0.0.1:5432/db SECRET_KEY=x .venv/bin/python benchmarks/images_api.py

Prints ONE JSON object on its last line: {"p50_ms", "p99_ms", ...}. The matching guard that the
number of SQL queries does not grow with the page size is
tests/datasets/test_images_api.py::test_listing_images_takes_the_same_number_of_queries_for_any_page_size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _inprocess import setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--page-size", type=int, default=50)
    args = parser.parse_args()

    setup_django("api", client_host=True)
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from PIL import Image

    from datasets_app.models import Dataset, DatasetImage, ReviewState, StoredBlob
    from datasets_app.near_duplicates import signature
    from lorasite.accounts.models import ApiToken, Membership, Role, Team

    user, _ = get_user_model().objects.get_or_create(username="bench-reader")
    team, _ = Team.objects.get_or_create(slug="bench-api", defaults={"name": "Bench API"})
    Membership.objects.get_or_create(team=team, user=user, defaults={"role": Role.VIEWER})
    Dataset.objects.filter(team=team).delete()
    dataset = Dataset.objects.create(team=team, name=f"api-{time.time_ns()}")
    prefix = f"{time.time_ns():016x}"
    blobs = StoredBlob.objects.bulk_create([
        StoredBlob(sha256=f"{prefix}{i:048x}", file=f"blobs/xx/{prefix}{i}.jpg", format="JPEG", size_bytes=150_000)
        for i in range(args.images)], batch_size=1000)
    states = [ReviewState.PENDING, ReviewState.APPROVED, ReviewState.REJECTED]
    phash = signature(Image.linear_gradient("L").convert("RGB"))  # a real one's length (747 characters)
    images = DatasetImage.objects.bulk_create([
        DatasetImage(dataset=dataset, blob=b, sha256=b.sha256, phash=phash, width=1024, height=1024,
                     format="JPEG", size_bytes=150_000, original_name=f"img_{i:05d}.jpg", review_state=states[i % 3],
                     caption=f"ohwx, photo number {i}, studio light, 85mm", repeats=1 + i % 4,
                     reviewed_by=user if i % 3 else None)
        for i, b in enumerate(blobs)], batch_size=1000)
    # A few near-duplicate links, as a real dataset has.
    DatasetImage.objects.filter(pk__in=[im.pk for im in images[1::50]]).update(near_duplicate_of=images[0])

    token = ApiToken.issue(user, "bench")[1]
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    url = f"/api/datasets/{dataset.uuid}/images"
    pages = max(1, args.images // args.page_size)
    for page in range(1, 6):  # warm up connections, caches and the token's last_used_at
        client.get(url, {"page": page, "page_size": args.page_size})
    samples = []
    for n in range(args.requests):
        params = {"page": 1 + (n * 7) % pages, "page_size": args.page_size}
        if n % 4 == 3:
            params["review_state"] = "approved"
            params["page"] = 1 + params["page"] % max(1, pages // 3)
        start = time.perf_counter()
        response = client.get(url, params)
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.content[:200]
    with CaptureQueriesContext(connection) as small:
        client.get(url, {"page_size": 5})
    with CaptureQueriesContext(connection) as large:
        client.get(url, {"page_size": 200})
    samples.sort()
    result = {
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2),
        "requests": args.requests, "images": args.images, "page_size": args.page_size,
        "queries_page_size_5": len(small), "queries_page_size_200": len(large),
        "database": connection.vendor,
    }
    Dataset.objects.filter(pk=dataset.pk).delete()
    StoredBlob.objects.filter(sha256__startswith=prefix).delete()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
