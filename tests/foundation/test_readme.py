"""README.md as a newcomer reads it: after a demo install, every shell line of the sections a user
runs works exactly as written (from a shell whose PATH has no virtualenv), against a running demo."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.conftest import draw_png
from tests.services import REPO, free_port, start_process, stop_process, wait_for_port

README = REPO / "README.md"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
# Sections whose commands a user runs in a `make demo` checkout, in the order the README gives them.
RUN_SECTIONS = ("## Use your own model", "## Teams, access and tokens", "## Using it")
# Lines the test does not run, with the reason.
NOT_RUN = {
    "manage.py createsuperuser": "interactive (asks for a password)",
}


def shell_blocks(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(section + "\n")
    end = text.find("\n## ", start + len(section))
    body = text[start:end if end != -1 else None]
    return re.findall(r"```bash\n(.*?)```", body, flags=re.S)


def runnable_lines(block: str) -> list[str]:
    lines = block.replace("\\\n", " ").splitlines()
    return [line for line in lines if line.strip() and not any(key in line for key in NOT_RUN)]


def test_the_readme_names_its_two_commands_and_they_are_make_targets():
    block = shell_blocks("## The two commands")[0]
    assert [line.split()[:2] for line in block.splitlines() if line.strip()] == [["make", "demo"], ["make", "test"]]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_every_command_a_user_runs_works_as_written_after_a_demo_install(tmp_path):
    if not VENV_PYTHON.exists():
        pytest.skip("no .venv in the checkout: the README's commands assume `make demo` created it")
    home = tmp_path / "checkout"
    home.mkdir()
    # A scratch working directory that looks like the checkout, so files the commands write
    # (lora.safetensors, exports) land here and not in the repository.
    (home / ".venv").symlink_to(REPO / ".venv")
    (home / "manage.py").symlink_to(REPO / "manage.py")
    with zipfile.ZipFile(home / "shots.zip", "w") as archive:
        for index in range(3):
            archive.writestr(f"shot{index}.png", draw_png(100 + index))
            archive.writestr(f"shot{index}.txt", f"a drawn shape number {index}")
    venv_bin = str(REPO / ".venv" / "bin")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTEST", "DJANGO_", "LORASITE_", "DATABASE_", "REDIS_", "RABBITMQ_"))
           and key not in {"MEDIA_ROOT", "SECRET_KEY", "VIRTUAL_ENV"}}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.update(LORASITE_VAR_DIR=str(tmp_path / "var"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    # What `make demo` does before it serves.
    for command in (["migrate", "--noinput"], ["seed_demo"]):
        subprocess.run([str(VENV_PYTHON), "manage.py", *command], cwd=home, env=env, check=True,
                       capture_output=True, timeout=300)
    port = free_port()
    server = start_process([str(VENV_PYTHON), "manage.py", "serve", "--port", str(port)], env)
    try:
        wait_for_port(port, server, timeout=60)
        script = ["set -euo pipefail"]
        for section in RUN_SECTIONS:
            for block in shell_blocks(section):
                script += runnable_lines(block)
        text = "\n".join(script).replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        result = subprocess.run(["bash", "-c", text], cwd=home, env=env, capture_output=True, text=True,
                                timeout=600)
    finally:
        log = stop_process(server)
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    assert "Traceback" not in log, log[-3000:]
    assert "No module named" not in result.stderr
    from safetensors import safe_open

    with safe_open(str(home / "lora.safetensors"), framework="pt") as weights:
        assert list(weights.keys())
    # The kohya export imports back whole: every exported image, none rejected.
    exported = zipfile.ZipFile(io.BytesIO((home / "demo-shapes-kohya.zip").read_bytes())).namelist()
    images = [name for name in exported if not name.endswith(".txt")]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert images and summary["added"] == len(images) and summary["rejected"] == 0, (summary, exported)


def test_the_readme_documents_every_setting_it_tells_operators_to_set():
    text = README.read_text()
    for name in ("DATABASE_URL", "DATABASE_POOL_SIZE", "REDIS_URL", "SECRET_KEY", "LORASITE_MODELS_DIR"):
        assert f"`{name}`" in text, name
    assert Path(REPO / "Makefile").read_text().count("python3.11") >= 1
