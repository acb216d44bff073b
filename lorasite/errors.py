"""Domain errors that carry the text a user sees; the API maps each to one HTTP status."""

from __future__ import annotations


class DomainError(Exception):
    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    """Missing, or belongs to a team the user is not in: the two must look the same."""

    status = 404

    def __init__(self, message: str = "Not found."):
        super().__init__(message)


class PermissionDenied(DomainError):
    """The user can see the object but their role does not allow this action."""

    status = 403


class Conflict(DomainError):
    status = 409


class InvalidInput(DomainError):
    """Bad input; `errors` lists per-field messages like ninja's 422 responses do."""

    status = 422

    def __init__(self, message: str, errors: list[dict] | None = None):
        super().__init__(message)
        self.errors = errors or []
