"""How a function version's models[] and resources[] name stored artifacts, and where each
is mounted (spec §2.1.1, §4.1). Pure rules: `domain/artifacts.py` looks them up in the store.

An entry whose `uri` is `nvcf-lite://models/NAME/VERSION` (or `nvcf-lite://resources/...`)
names the stored artifact itself; any other uri (an NGC one, kept as registered) is matched by
the entry's own name and version. Either way it is mounted at `/config/models/{name}` (or
`/config/resources/{name}`) under the entry's name. A model-only function (no containerImage)
runs the `[models]` model server.
"""

from __future__ import annotations

import re

import msgspec

from nvcf_lite.errors import Invalid
from nvcf_lite.models import ArtifactKind, FunctionVersion

URI_SCHEME = "nvcf-lite://"
MOUNT_ROOT = "/config"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ArtifactMissing(LookupError):
    """A model or resource a function version names cannot be mounted: the store lacks it,
    or its name is no folder name. Not an NvcfError: no client request gets it; it is why an
    instance cannot start (the version's healthInfo), `str(exc)` the reason."""


class ModelServer(msgspec.Struct, frozen=True):
    """What a model-only function runs (spec §4.1): the `[models]` defaults."""

    image: str
    args: str


class ArtifactMount(msgspec.Struct, frozen=True):
    source: str  # the tree on this host
    target: str  # /config/models/{name} or /config/resources/{name}


class Ref(msgspec.Struct, frozen=True):
    """One models[] or resources[] entry: the artifact it resolves to and where it goes;
    `problem` says why it cannot name one (a malformed nvcf-lite uri)."""

    kind: ArtifactKind
    name: str
    version: str
    mount_kind: ArtifactKind
    mount_name: str
    problem: str | None = None


def store_uri(kind: ArtifactKind, name: str, version: str) -> str:
    return f"{URI_SCHEME}{kind.plural}/{name}/{version}"


def container_command(
    version: FunctionVersion, server: ModelServer | None
) -> tuple[str, str | None]:
    """The image and args a version runs: its own, or the model server's for model-only."""
    if version.container_image or not version.models or server is None:
        return version.container_image or "", version.container_args
    return server.image, version.container_args or server.args


def refs(version: FunctionVersion) -> list[Ref]:
    """What the version mounts: its models[], then its resources[]; each is mounted under the
    entry's own name, whichever stored artifact its uri names. An entry with neither a
    version nor an nvcf-lite uri (an LLM function's model may have neither) names nothing to
    mount, and is skipped."""
    entries = [(ArtifactKind.MODEL, m.name, m.version, m.uri) for m in version.models or ()]
    entries += [(ArtifactKind.RESOURCE, r.name, r.version, r.uri) for r in version.resources or ()]
    out = []
    for kind, name, wanted, uri in entries:
        stored_kind, stored_name, problem = kind, name, None
        if uri and uri.startswith(URI_SCHEME):
            parsed = _parse_uri(uri)
            if parsed is None:
                problem = (
                    f"{kind} '{name}': uri {uri!r} is not of the form {URI_SCHEME}models/NAME/"
                    f"VERSION or {URI_SCHEME}resources/NAME/VERSION"
                )
            else:
                stored_kind, stored_name, wanted = parsed
        if wanted is None and problem is None:
            continue
        out.append(
            Ref(
                kind=stored_kind,
                name=stored_name,
                version=wanted or "",
                mount_kind=kind,
                mount_name=name,
                problem=problem,
            )
        )
    return out


def _parse_uri(uri: str) -> tuple[ArtifactKind, str, str] | None:
    parts = uri[len(URI_SCHEME) :].split("/")
    kinds = {k.plural: k for k in ArtifactKind}
    if len(parts) != 3 or parts[0] not in kinds or not all(parts):
        return None
    return kinds[parts[0]], parts[1], parts[2]


def check_name(field: str, value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise Invalid(
            f"{field} {value!r} must match {NAME_RE.pattern} (it becomes a folder name under"
            f" {MOUNT_ROOT})"
        )
    return value


def missing_reason(ref: Ref) -> str:
    return (
        f"{ref.kind} '{ref.name}' version '{ref.version}' is not in the model store (push it: "
        f"nvcf-lite {ref.kind.plural} push {ref.name} {ref.version} PATH)"
    )
