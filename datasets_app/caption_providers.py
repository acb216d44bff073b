"""Caption provider rows: validated creation, which ones a team may use, their live availability,
and turning a row into the captioning package's ProviderSettings (the key read from the
environment variable the row names, on the worker, at run time)."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet

from datasets_app.captioning import simple
from datasets_app.captioning.base import Availability, FatalError, ProviderSettings
from datasets_app.captioning.registry import HTTP_TYPES, TYPES, build_provider
from datasets_app.models import CaptionProvider
from lorasite.accounts.models import Team
from lorasite.errors import Conflict, InvalidInput, NotFound

KEY_PREFIX = "CAPTION_KEY_"
LIMITS = {"concurrency": (1, 64), "timeout_seconds": (1, 600), "max_image_side": (64, 4096)}
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,99}$")


def key_prefix_for(team: Team | None) -> str:
    """A team's providers may name only variables made for that team (CAPTION_KEY_<SLUG>...), so no
    team can send the server's secrets, or another team's key, to a URL of its choosing."""
    if team is None:
        return KEY_PREFIX
    return KEY_PREFIX + re.sub(r"[^A-Z0-9]", "_", team.slug.upper())


def _field(loc: str, message: str) -> InvalidInput:
    return InvalidInput(message, [{"loc": [loc], "msg": message}])


def validate_api_key_env(name: str, team: Team | None) -> str:
    name = name.strip()
    if not name:
        return ""
    prefix = key_prefix_for(team)
    if not _ENV_NAME.match(name):
        raise _field("api_key_env", "Give the NAME of an environment variable (capitals, digits, _), not the key.")
    if not name.startswith(prefix):
        raise _field("api_key_env", f"The variable's name must start with {prefix} (the operator sets it on "
                                    "the captioning workers).")
    return name


def _address_allowed(host: str) -> bool:
    """Loopback, private and link-local targets only when the operator allows them, so a team's
    provider cannot make the workers probe their own network."""
    if settings.CAPTION_ALLOW_PRIVATE_URLS:
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_private or address.is_loopback or address.is_link_local or address.is_reserved:
            return False
    return True


def validate_base_url(url: str, type_: str, team: Team | None) -> str:
    url = url.strip()
    if type_ not in HTTP_TYPES:
        return url
    if not url:
        if type_ == "hf":
            return ""  # the default Hugging Face host
        raise _field("base_url", f"A {type_} provider needs the server's base URL.")
    parts = urlsplit(url.replace("{model}", "model"))
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise _field("base_url", "The base URL must start with http:// or https:// and name a host.")
    if parts.username or parts.password:
        raise _field("base_url", "Put no credentials in the URL; name a key variable in api_key_env.")
    if team is not None and not _address_allowed(parts.hostname):
        raise _field("base_url", "That address is on a private network; the operator must allow those "
                                 "(CAPTION_ALLOW_PRIVATE_URLS) or add the provider for every team.")
    return url


def validate(team: Team | None, fields: dict) -> dict:
    """Clean and check a provider's fields; raises InvalidInput naming the field."""
    type_ = fields.get("type", "")
    if type_ not in TYPES:
        raise _field("type", f"type must be one of {', '.join(TYPES)}.")
    name = (fields.get("name") or "").strip()
    if not name or len(name) > 80:
        raise _field("name", "Give the provider a name (80 characters at most).")
    cleaned = {"name": name, "type": type_, "model": (fields.get("model") or "").strip(),
               "prompt": fields.get("prompt") or "",
               "base_url": validate_base_url(fields.get("base_url") or "", type_, team),
               "api_key_env": validate_api_key_env(fields.get("api_key_env") or "", team)}
    if "\x00" in cleaned["prompt"] or len(cleaned["prompt"]) > 4000:
        raise _field("prompt", "The prompt may have at most 4000 characters and no NUL.")
    for key, (low, high) in LIMITS.items():
        value = fields.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or not low <= value <= high:
            raise _field(key, f"{key} must be a whole number from {low} to {high}.")
        cleaned[key] = value
    if type_ in ("openai", "ollama") and not cleaned["model"]:
        raise _field("model", f"A {type_} provider needs the model name the server knows.")
    if type_ == "local":
        from datasets_app.captioning.local import resolve_model_dir

        try:
            resolve_model_dir(cleaned["model"])
        except FatalError as exc:
            raise _field("model", exc.message) from None
    if type_ == "simple":
        try:
            simple.check_template(cleaned["prompt"] or simple.DEFAULT_TEMPLATE)
        except FatalError as exc:
            raise _field("prompt", exc.message) from None
    return cleaned


def create_provider(team: Team | None, **fields) -> CaptionProvider:
    cleaned = validate(team, fields)
    try:
        with transaction.atomic():
            return CaptionProvider.objects.create(team=team, **cleaned)
    except IntegrityError:
        where = f"Team {team.slug}" if team else "The site"
        raise Conflict(f"{where} already has a caption provider called “{cleaned['name']}”.") from None


def usable_by(team: Team) -> QuerySet[CaptionProvider]:
    """The team's own providers and the global ones."""
    return CaptionProvider.objects.filter(Q(team=team) | Q(team__isnull=True)).order_by("team_id", "name")


def get_usable(team: Team, ref: str) -> CaptionProvider:
    """A provider by uuid or name that the team may use (its own first, then a global one)."""
    from lorasite.accounts.access import looks_like_uuid

    providers = usable_by(team).filter(enabled=True)
    lookup = {"uuid": ref} if looks_like_uuid(ref) else {"name": ref}
    found = sorted(providers.filter(**lookup), key=lambda p: p.team_id is None)
    if not found:
        raise NotFound(f"No caption provider {ref!r} for team {team.slug}.")
    return found[0]


def provider_settings(provider: CaptionProvider, resolve_key: bool = True) -> ProviderSettings:
    """What the captioning package needs; the key comes from the worker's environment."""
    api_key = ""
    if resolve_key and provider.api_key_env:
        api_key = os.environ.get(provider.api_key_env, "")
        if not api_key:
            raise FatalError(f"The environment variable {provider.api_key_env} is not set on the captioning "
                             "worker: the operator must set it to the provider's API key.")
    return ProviderSettings(type=provider.type, model=provider.model, base_url=provider.base_url, api_key=api_key,
                            prompt=provider.prompt, timeout=float(provider.timeout_seconds),
                            max_side=provider.max_image_side, options={"concurrency": provider.concurrency})


def availability(provider: CaptionProvider) -> Availability:
    """Reachable, and the model present where the protocol can tell. Never loads torch."""
    if not provider.enabled:
        return Availability(False, "disabled")
    if provider.type == "local":
        from datasets_app.captioning.local import check_local

        return check_local(provider.model)
    # The key lives on the captioning workers; this node may not have it. Probe without it then.
    has_key = not provider.api_key_env or bool(os.environ.get(provider.api_key_env))
    try:
        built = build_provider(provider_settings(provider, resolve_key=has_key), provider.api_key_env)
    except FatalError as exc:
        return Availability(False, exc.message)
    try:
        result = built.check()
    finally:
        built.close()
    if result.ok and not has_key:
        return Availability(True, f"{result.detail}; {provider.api_key_env} is not set on this web node "
                                  "(it must be on the captioning workers)")
    return result


def with_availability(providers: list[CaptionProvider]) -> list[tuple[CaptionProvider, Availability]]:
    """Checked concurrently: one slow server must not make the list wait for every other one."""
    if not providers:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(providers))) as pool:
        return list(zip(providers, pool.map(availability, providers), strict=True))
