"""Request rules of assets (spec §2.5, §2.3.1): A1's body, the upload's headers, and the
NVCF-INPUT-ASSET-REFERENCES header of an invocation. Each rule raises an NvcfError whose
message names what is wrong; where NVCF's own message is known it is used word for word."""

from __future__ import annotations

import re

from nvcf_lite.errors import Forbidden, Invalid, PayloadTooLarge
from nvcf_lite.models import parse_uuid

DESCRIPTION_HEADER = "x-amz-meta-nvcf-asset-description"
REFERENCES_HEADER = "NVCF-INPUT-ASSET-REFERENCES"
MAX_DESCRIPTION = 1024  # it travels back as an HTTP header; S3 caps user metadata at 2 KB
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
# parameters: token=token or token="quoted", no control character (a NUL included) in quotes
_MEDIA_TYPE = re.compile(rf"^{_TOKEN}/{_TOKEN}(\s*;\s*{_TOKEN}=({_TOKEN}|\"[^\"\\\x00-\x1f]*\"))*$")


def check_new_asset(content_type: str | None, description: str | None) -> tuple[str, str]:
    """A1's two required fields: a media type, and a one-line description."""
    if content_type is None or not content_type.strip():
        raise Invalid("'contentType' is required in the request payload")
    if not _MEDIA_TYPE.match(content_type):
        raise Invalid(f"Invalid contentType '{content_type}' in the request payload")
    if description is None or not description.strip():
        raise Invalid("'description' is required in the request payload")
    if len(description) > MAX_DESCRIPTION or any(c in description for c in "\r\n\0"):
        raise Invalid(
            f"Invalid description in the request payload: it is sent back as the upload header "
            f"{DESCRIPTION_HEADER}, so it must be one line of at most {MAX_DESCRIPTION} characters"
        )
    return content_type, description


def header_text(raw: str | None) -> str:
    """A header value as text: ASGI headers arrive as latin-1; clients may have sent UTF-8."""
    value = (raw or "").strip()
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def require_same(header: str, sent: str, reserved: str) -> None:
    """An upload repeats the Content-Type and description of its reservation, as S3 wants."""
    if sent != reserved:
        raise Forbidden(
            f"Header {header} '{sent}' does not match '{reserved}', the value the upload URL "
            "was signed for (send the contentType and description given when the asset was created)"
        )


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The asset is larger than the limit of {limit} bytes")


def parse_references(header_value: str | None) -> list[str]:
    """Asset ids of NVCF-INPUT-ASSET-REFERENCES: trimmed, empty items dropped, each id once.

    A non-UUID item is a 400 (`IS/routes/input_asset_header.rs`).
    """
    ids: list[str] = []
    for item in (header_value or "").split(","):
        if not item.strip():
            continue
        canonical = parse_uuid(item.strip())
        if canonical is None:
            raise Invalid(f"Invalid asset id '{item.strip()}' in {REFERENCES_HEADER}")
        if canonical not in ids:
            ids.append(canonical)
    return ids
