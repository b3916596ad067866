"""The one error type of the platform and its kinds.

The domain raises these; drivers translate foreign exceptions into them at their edge; one
handler in `api/problems.py` renders every one as RFC 9457 problem+json.
"""

from __future__ import annotations

from http import HTTPStatus

# Hosted NVCF control-plane errors use this prefix (spec §5.1); the suffix is the kebab name.
TYPE_PREFIX = "urn:kaizen:problem-details:"


class NvcfError(Exception):
    status: int = 500
    kind: str = "internal-server-error"

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        type_: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        if status is not None:
            self.status = status
        self.type = type_ or TYPE_PREFIX + self.kind

    @property
    def title(self) -> str:
        return HTTPStatus(self.status).phrase


class Invalid(NvcfError):
    status = 400
    kind = "bad-request"


class Unauthorized(NvcfError):
    status = 401
    kind = "unauthorized"


class Forbidden(NvcfError):
    status = 403
    kind = "forbidden"


class NotFound(NvcfError):
    status = 404
    kind = "not-found"


class Conflict(NvcfError):
    status = 409
    kind = "exists"


class PayloadTooLarge(NvcfError):
    status = 413
    kind = "payload-too-large"


class Unprocessable(NvcfError):
    status = 422
    kind = "unprocessable-entity"


class TooManyRequests(NvcfError):
    status = 429
    kind = "too-many-requests"


class NoCapacity(NvcfError):
    """The host cannot place what was asked for right now."""

    status = 409
    kind = "exists"


class Unavailable(NvcfError):
    status = 503
    kind = "service-unavailable"


class InsufficientStorage(NvcfError):
    status = 507
    kind = "insufficient-storage"
