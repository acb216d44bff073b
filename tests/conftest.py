"""The shared cast: two teams, an owner, an admin, a member, a viewer, and an outsider."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from lorasite.accounts.models import ApiToken, Membership, Role, Team


class ApiClient:
    """Django's test client speaking JSON with a bearer token, like a script would."""

    def __init__(self, user):
        self.user = user
        self.token = ApiToken.issue(user, "tests")[1] if user is not None else None
        self.client = Client()

    def _headers(self, extra):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {self.token}"} if self.token else {}
        headers.update(extra)
        return headers

    def get(self, path, **extra):
        return self.client.get(path, **self._headers(extra))

    def delete(self, path, **extra):
        return self.client.delete(path, **self._headers(extra))

    def post(self, path, data=None, content_type="application/json", **extra):
        return self.client.post(path, data, content_type=content_type, **self._headers(extra))

    def put(self, path, data=None, **extra):
        return self.client.put(path, data, content_type="application/json", **self._headers(extra))

    def patch(self, path, data=None, **extra):
        return self.client.patch(path, data, content_type="application/json", **self._headers(extra))


@pytest.fixture(scope="session", autouse=True)
def _end_stray_database_sessions(django_db_setup, django_db_blocker):
    """Worker threads and killed subprocesses can leave sessions on the test database, which would
    stop pytest-django from dropping it at the end of the run."""
    yield
    from django.db import connection

    # pytest-django only creates the test database when a collected test needs it.
    if connection.vendor != "postgresql" or not str(connection.settings_dict["NAME"]).startswith("test_"):
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")


def make_user(username: str):
    user = get_user_model().objects.create_user(username=username, password=f"{username}-pass-123")
    return user


@pytest.fixture
def team_a(db):
    return Team.objects.create(slug="alpha", name="Alpha")


@pytest.fixture
def team_b(db):
    return Team.objects.create(slug="bravo", name="Bravo")


def _member(team, username, role):
    user = make_user(username)
    Membership.objects.create(team=team, user=user, role=role)
    return user


@pytest.fixture
def owner(team_a):
    return _member(team_a, "olivia", Role.OWNER)


@pytest.fixture
def admin_user(team_a):
    return _member(team_a, "adam", Role.ADMIN)


@pytest.fixture
def member(team_a):
    return _member(team_a, "mia", Role.MEMBER)


@pytest.fixture
def viewer(team_a):
    return _member(team_a, "victor", Role.VIEWER)


@pytest.fixture
def outsider(team_b):
    """A member of team B: authenticated, but must see nothing of team A."""
    return _member(team_b, "oscar", Role.OWNER)


@pytest.fixture
def redis_stack(settings):
    """Start daphne and workers in production mode on Redis (see tests/services.py); all stopped after."""
    from tests.services import RedisStack

    stack = RedisStack(str(settings.LORASITE_MODELS_DIR))
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture
def api_for():
    return ApiClient


def draw_png(index: int, size: tuple[int, int] = (64, 64)) -> bytes:
    """A small distinct image: a coloured square on a contrasting background."""
    import io

    from PIL import Image, ImageDraw

    colours = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 200, 40), (160, 60, 200), (30, 190, 190)]
    image = Image.new("RGB", size, colours[(index + 3) % len(colours)])
    w, h = size
    ImageDraw.Draw(image).rectangle([w // 4, h // 4, 3 * w // 4, 3 * h // 4], fill=colours[index % len(colours)])
    ImageDraw.Draw(image).text((2, 2), str(index), fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_dataset(team, user, name="shapes", count=4, captions=True, size=(64, 64)):
    """A dataset filled through the real ingest path with drawn PNGs (+ .txt captions)."""
    from datasets_app.ingest import Entry, ingest_entries
    from datasets_app.services import create_dataset

    dataset = create_dataset(team, user, name, trigger_word="shp")
    entries = []
    for i in range(count):
        data = draw_png(i, size)
        entries.append(Entry(name=f"img{i}.png", path=f"img{i}.png", read=lambda data=data: data))
        if captions:
            text = f"shp, a square number {i}".encode()
            entries.append(Entry(name=f"img{i}.txt", path=f"img{i}.txt", read=lambda text=text: text))
    report = ingest_entries(dataset, entries, user=user)
    assert len(report.added) == count, report.as_dict()
    return dataset


@pytest.fixture
def dataset_a(team_a, member):
    return make_dataset(team_a, member)


@pytest.fixture
def tiny_base_model(db):
    """The generated tiny SD-1.5 model, registered as base model `tiny-sd15` (built once per run)."""
    from training_app.models import BaseModel, Family

    path = _tiny_model_dir("sd15")
    return BaseModel.objects.create(name="tiny-sd15", family=Family.SD15, location=str(path), random_weights=True)


_TINY_CACHE: dict[str, object] = {}


def _tiny_model_dir(family: str):
    from django.conf import settings

    if family not in _TINY_CACHE:
        from training_app.trainer import build_tiny_model

        _TINY_CACHE[family] = build_tiny_model(settings.LORASITE_MODELS_DIR / f"tiny-{family}", family=family)
    return _TINY_CACHE[family]
