"""Registering remote backends: the one place that checks a BackendConfig before it is saved
(used by the Settings page, the admin and `manage.py add_backend`)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from django.db import IntegrityError, transaction

from lorasite.errors import InvalidInput, NotFound
from training_app.backends.registry import BUILTIN, validate_options
from training_app.backends.replicate_api import DEFAULT_BASE_URL as REPLICATE_API_URL
from training_app.models import BackendConfig, BackendType

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
ENV_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,99}$")
FIELDS = ("name", "type", "base_url", "token_env", "request_timeout_seconds", "overall_timeout_seconds",
          "max_concurrent_jobs", "options")


def clean(values: dict[str, Any]) -> dict[str, Any]:
    """Checked and normalised fields of a config; InvalidInput lists every problem at once."""
    errors: list[dict[str, Any]] = []
    name = str(values.get("name") or "").strip().lower()
    if not NAME_RE.match(name):
        errors.append({"loc": ["name"], "msg": "name: 1-40 lowercase letters, digits, - or _"})
    elif name in BUILTIN:
        errors.append({"loc": ["name"], "msg": f"name: {name!r} is the built-in backend's name"})
    type_ = str(values.get("type") or "")
    if type_ not in BackendType.values:
        errors.append({"loc": ["type"], "msg": f"type: one of {', '.join(BackendType.values)}"})
    base_url = str(values.get("base_url") or "").strip().rstrip("/")
    if not base_url and type_ == BackendType.REPLICATE:
        base_url = REPLICATE_API_URL
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        errors.append({"loc": ["base_url"], "msg": "base_url: an http(s) URL such as http://10.0.0.5:8188"})
    token_env = str(values.get("token_env") or "").strip()
    if token_env and not ENV_RE.match(token_env):
        # A pasted token would be stored in clear: only a variable's NAME is accepted.
        errors.append({"loc": ["token_env"], "msg": "token_env: the NAME of an environment variable "
                                                    "(A-Z, 0-9, _), never the token itself"})
    elif not token_env and type_ == BackendType.REPLICATE:
        errors.append({"loc": ["token_env"], "msg": "token_env: Replicate needs an API token; give the NAME of "
                                                    "the environment variable that holds it"})
    numbers = {}
    for field, low, high, default in (("request_timeout_seconds", 1, 600, 30.0),
                                      ("overall_timeout_seconds", 60, 14 * 86400, 48 * 3600),
                                      ("max_concurrent_jobs", 1, 64, 1)):
        raw = values.get(field)
        try:
            number = default if raw in (None, "") else float(raw)
        except (TypeError, ValueError):
            number = None
        if number is None or not low <= number <= high:
            errors.append({"loc": [field], "msg": f"{field}: a number from {low} to {high}"})
        else:
            numbers[field] = number if field == "request_timeout_seconds" else int(number)
    options = values.get("options") or {}
    if not isinstance(options, dict):
        errors.append({"loc": ["options"], "msg": "options: a JSON object"})
    elif type_ in BackendType.values:
        try:
            options = validate_options(type_, options)
        except InvalidInput as exc:
            errors.extend(exc.errors)
    if errors:
        raise InvalidInput("The backend is not valid: " + "; ".join(e["msg"] for e in errors), errors)
    return {"name": name, "type": type_, "base_url": base_url, "token_env": token_env, "options": options,
            **numbers}


def save(team, values: dict[str, Any], config: BackendConfig | None = None) -> BackendConfig:
    """Create (or, with `config`, update) a team's backend; team None makes a global one."""
    if config is not None and "token_env" not in values:
        values = {**values, "token_env": config.token_env}  # the form never shows it: blank keeps it
    fields = clean(values)
    config = config or BackendConfig(team=team)
    for key, value in fields.items():
        setattr(config, key, value)
    try:
        with transaction.atomic():
            config.save()
    except IntegrityError:
        raise InvalidInput(f"There is already a backend called {fields['name']!r}.",
                           [{"loc": ["name"], "msg": "name already used"}]) from None
    return config


def team_config(team, ref: str) -> BackendConfig:
    """One of the team's own configs by uuid or name (global ones are managed by operators)."""
    rows = BackendConfig.objects.filter(team=team)
    row = rows.filter(name=ref).first()
    if row is None and re.fullmatch(r"[0-9a-fA-F-]{32,36}", ref or ""):
        row = rows.filter(uuid=ref).first()
    if row is None:
        raise NotFound("Backend not found.")
    return row


def delete(team, ref: str) -> None:
    """Remove a team's backend; its past jobs keep their history, a queued one fails when it would run."""
    team_config(team, ref).delete()


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs into options; dotted keys nest (`checkpoints.sd15=v1-5.safetensors`) and values
    that read as JSON (numbers, true, objects) are taken as such."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"--option {pair!r} is not KEY=VALUE.", [{"loc": ["options"], "msg": "KEY=VALUE"}])
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        # A base model name may itself contain dots: only the first dot nests.
        head, dot, rest = key.strip().partition(".")
        if dot:
            options.setdefault(head, {})[rest] = value
        else:
            options[head] = value
    return options
