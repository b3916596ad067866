"""How the control plane reads a JSON body: the request class every Litestar route gets.

Litestar decodes a body with msgspec whatever its Content-Type says, and lets msgspec's
UnicodeDecodeError out as a 500. Here a body is read as JSON only when it says it is JSON (or
says nothing); invalid UTF-8 is a 400 that says where; and a NUL character in any string is
refused (400) before it can reach a file name, a label, SQLite or the Docker engine, where it
either truncates the value or fails far from the request. Invocation bodies are not read here:
they go to the container as they are (api/invocations.py reads the raw bytes).
"""

from __future__ import annotations

from typing import Any

from litestar import Request

from nvcf_lite.errors import Invalid, UnsupportedMediaType

_JSON_SUFFIX = "+json"
# Nothing in the NVCF API nests deeper than a handful of levels; msgspec stops decoding at
# about a thousand (RecursionError), which is what a client sending more gets told about.
MAX_DEPTH = 1000


def is_json_media_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith(_JSON_SUFFIX)
    )


def nul_at(value: Any, where: str = "") -> str | None:
    """The JSON path of the first string (or key) with a NUL character, else None."""
    if isinstance(value, str):
        return where or "the body" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if "\x00" in str(key):
                return path
            found = nul_at(item, path)
            if found:
                return found
    elif isinstance(value, list):
        for n, item in enumerate(value):
            found = nul_at(item, f"{where}[{n}]")
            if found:
                return found
    return None


class JsonRequest(Request[Any, Any, Any]):
    async def json(self) -> Any:
        content_type = self.headers.get("content-type")
        if content_type and not is_json_media_type(content_type):
            raise UnsupportedMediaType(
                f"Unsupported Content-Type '{content_type}': send the body as JSON with"
                " 'Content-Type: application/json'"
            )
        try:
            value = await super().json()
            where = nul_at(value)
        except UnicodeDecodeError as exc:
            raise Invalid(f"JSON is malformed: not valid UTF-8 (byte {exc.start})") from exc
        except RecursionError as exc:  # msgspec's depth limit, or nul_at's walk of the value
            raise Invalid(f"JSON is nested too deeply (more than {MAX_DEPTH} levels)") from exc
        if where is not None:
            raise Invalid(f"Invalid request: '{where}' contains a NUL character (\\u0000)")
        return value
