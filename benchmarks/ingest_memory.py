"""Peak memory of ingest when three large images arrive at once: the pixel budget against none.

Each configuration runs in a fresh subprocess (peak RSS is per process): three threads validate a
7990×8000 PNG (about 200 KB on disk, 64 MP decoded) through `inspect_image`, the same call an
upload makes. Prints one JSON object on its last line.
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import io, json, resource, sys, threading, time
from PIL import Image
from datasets_app.validation import Limits, inspect_image

budget = int(sys.argv[1])
buffer = io.BytesIO()
Image.new("RGB", (7990, 8000), (40, 90, 200)).save(buffer, format="PNG")
data = buffer.getvalue()
limits = Limits(decode_budget_pixels=budget)
start = time.perf_counter()
threads = [threading.Thread(target=inspect_image, args=(data, limits)) for _ in range(3)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - start, "png_kb": len(data) / 1024}))
"""


def run(budget: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(budget)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    bounded = run(64_000_000)
    unbounded = run(10**12)
    print(json.dumps({"peak_rss_mb_budget_64mp": round(bounded["peak_rss_mb"]),
                      "peak_rss_mb_unbounded": round(unbounded["peak_rss_mb"]),
                      "seconds_budget_64mp": round(bounded["seconds"], 1),
                      "seconds_unbounded": round(unbounded["seconds"], 1),
                      "images": 3, "megapixels_each": 63.9, "png_kb": round(bounded["png_kb"])}))


if __name__ == "__main__":
    main()
