"""Container image references: which registry one names, and the mirrors that rewrite them.

The registry of a reference follows Docker's rules: the first path component is a registry
host when it has a `.` or a `:` or is `localhost` (`nvcr.io/org/x:1`, `127.0.0.1:5000/x:1`,
`localhost/x`); else the image is on Docker Hub (`ubuntu:22.04`, `org/x:1`), which every alias
(`index.docker.io`, `registry-1.docker.io`) names as `docker.io`.

Mirrors (config `registry.mirrors`) map a reference prefix to another, for sites that cannot
reach the public registries: `{"nvcr.io/" = "127.0.0.1:5000/nvcr/"}` pulls
`nvcr.io/org/x:1` as `127.0.0.1:5000/nvcr/org/x:1`. The longest matching prefix wins; a
Docker Hub image also matches in its full form (`docker.io/library/ubuntu:22.04`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Docker's reference grammar (distribution/reference): [host[:port]/]path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_REFERENCE = re.compile(
    rf"(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)
MAX_NAME = 255
_SUFFIX = (  # the tag and the digest, which MAX_NAME does not count
    r"(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*"
    r":[0-9a-fA-F]{32,})?"
)
# is_reference as one pattern, for the OpenAPI document (api/openapi_constraints.py)
PATTERN = rf"^(?=[\s\S]{{1,{MAX_NAME}}}{_SUFFIX}$){_REFERENCE.pattern}$"
_WHOLE = re.compile(PATTERN.removesuffix("$") + r"\Z")
DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


def is_reference(image: str) -> bool:
    """Whether `image` is a reference the Docker engine accepts (no `..`, no spaces, lower-case
    repository, a tag of at most 128 characters, a name of at most 255 before them)."""
    return bool(_WHOLE.match(image))


def canonical_host(host: str) -> str:
    """A registry host as credentials are matched: lower case, Docker Hub's aliases as one."""
    lowered = host.strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
    return DOCKER_HUB if lowered in _HUB_ALIASES else lowered


def _split(image: str) -> tuple[str | None, str]:
    """(the registry host the reference names, or None for Docker Hub; the rest)."""
    first, sep, rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return None, image


def registry_host(image: str) -> str:
    """The registry an image reference pulls from (canonical: `docker.io` for Docker Hub)."""
    host, _ = _split(image)
    return canonical_host(host) if host else DOCKER_HUB


def full_reference(image: str) -> str:
    """The reference with its registry spelled out (`ubuntu` -> `docker.io/library/ubuntu`)."""
    host, rest = _split(image)
    if host is not None:
        return image
    return f"{DOCKER_HUB}/{rest if '/' in rest else 'library/' + rest}"


def mirrored(image: str, mirrors: Mapping[str, str]) -> str:
    """The reference to pull `image` as: the longest mirror prefix it starts with replaced
    (as written first, then in its full form); `image` itself when no mirror matches."""
    for form in dict.fromkeys((image, full_reference(image))):
        matches = [prefix for prefix in mirrors if prefix and form.startswith(prefix)]
        if matches:
            prefix = max(matches, key=len)
            return mirrors[prefix] + form[len(prefix) :]
    return image
