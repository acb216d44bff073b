"""The project's one NinjaAPI: each app contributes a router; domain errors map to JSON once here."""

from __future__ import annotations

from ninja import NinjaAPI

from lorasite.accounts.auth import API_AUTH
from lorasite.errors import DomainError, InvalidInput

api = NinjaAPI(title="lorasite API", version="1", auth=API_AUTH, urls_namespace="api", docs_url="/docs")


@api.exception_handler(DomainError)
def domain_error(request, exc: DomainError):
    body: dict = {"detail": exc.message}
    if isinstance(exc, InvalidInput) and exc.errors:
        body["errors"] = exc.errors
    return api.create_response(request, body, status=exc.status)


def _mount() -> None:
    from datasets_app.api import router as datasets_router
    from datasets_app.caption_api import router as captioning_router
    from lorasite.accounts.api import router as accounts_router
    from training_app.api import router as training_router

    api.add_router("/", accounts_router)
    api.add_router("/", datasets_router)
    api.add_router("/", captioning_router)
    api.add_router("/", training_router)


_mount()
