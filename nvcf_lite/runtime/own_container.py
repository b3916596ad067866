"""nvcf-lite's own container, when it runs in one: is its data_dir the host's, at the same path?

Function containers get bind mounts of folders under data_dir (the request folders at /var/inf)
and of the in-memory secrets folder (docker.secrets_dir, at /var/secrets). The host's Docker
engine resolves those sources on the host, so a containerised nvcf-lite must see both
bind-mounted from the host at the same path: with no mount, a volume or another path, functions
silently get an empty /var/inf and no secrets.json. `data_mount_problem` finds this process's
container (its id is in the mount table, as Docker bind-mounts /etc/hostname from
/var/lib/docker/containers/<id>/, or in the cgroup path), reads its mounts through the Docker
API and says what is wrong, with the `docker run` flags that fix it. It runs before the server
starts, so it uses the SDK directly and briefly, not the DockerRuntime of the event loop.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from nvcf_lite.runtime.base import engine_url

log = logging.getLogger("nvcf_lite.runtime")

_ID = re.compile(r"[0-9a-f]{64}")
_CONTAINER_DIR = re.compile(r"/containers/([0-9a-f]{64})/")
# Files Docker bind-mounts into every container from its /var/lib/docker/containers/<id>/.
_DOCKER_FILES = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")
_WHY = (
    "Function containers get bind mounts of folders under it (/var/inf), which "
    "the host's Docker engine looks up on the host, so they would see empty folders."
)


@dataclass(frozen=True)
class Mount:
    """One entry of `docker inspect`'s Mounts."""

    type: str  # bind | volume | tmpfs | ...
    source: str
    destination: str
    rw: bool = True
    name: str = ""  # a volume's name (64 hex digits: anonymous)

    @classmethod
    def from_inspect(cls, doc: dict[str, Any]) -> Mount:
        return cls(
            type=str(doc.get("Type") or ""),
            source=str(doc.get("Source") or ""),
            destination=str(doc.get("Destination") or ""),
            rw=bool(doc.get("RW", True)),
            name=str(doc.get("Name") or ""),
        )


def container_ids(mountinfo: str, cgroup: str) -> list[str]:
    """Ids of the container this process may be in, most reliable first (may be empty).

    The mount table names the container's folder on the host for /etc/hostname and friends
    (also with `--network host` and cgroup namespaces); cgroup v1 and systemd's cgroup v2 paths
    end in the id as well.
    """
    found: list[str] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] in _DOCKER_FILES:
            match = _CONTAINER_DIR.search(fields[3] + "/")
            if match:
                found.append(match.group(1))
    for line in cgroup.splitlines():
        last = line.rstrip("/").rsplit("/", 1)[-1].removeprefix("docker-").removesuffix(".scope")
        if _ID.fullmatch(last):
            found.append(last)
    return list(dict.fromkeys(found))


def in_container(root: Path = Path("/")) -> bool:
    """Whether this process runs in a container whose id can be read (see container_ids)."""
    proc = root / "proc" / "self"
    return bool(container_ids(_read(proc / "mountinfo"), _read(proc / "cgroup")))


def _within(path: PurePosixPath, folder: PurePosixPath) -> bool:
    return path == folder or folder in path.parents


def _fault(mount: Mount | None) -> str | None:
    """Why this mount does not put the host's folder at the same path (None: it does)."""
    if mount is None:
        return "is not mounted from the host (it is in the container's own filesystem)"
    if mount.type == "volume":
        kind = "an anonymous" if _ID.fullmatch(mount.name) else f"the named ({mount.name})"
        return f"is {kind} Docker volume, not a folder of the host at the same path"
    if mount.type != "bind":
        return f"is a {mount.type or 'non-bind'} mount, not a folder of the host at the same path"
    if PurePosixPath(mount.source) != PurePosixPath(mount.destination):
        return f"is the host's {mount.source} mounted at {mount.destination}, not the same path"
    if not mount.rw:
        return "is mounted read-only"
    return None


def host_path_for(data_dir: PurePosixPath, mounts: Sequence[Mount]) -> PurePosixPath:
    """The host folder to mount at the same path: where data_dir's bytes are now, if that is a
    host folder (so a fix keeps them), else data_dir itself."""
    base = _covering(data_dir, mounts)
    if base is not None and base.type == "bind" and base.source:
        return PurePosixPath(base.source) / data_dir.relative_to(base.destination)
    return data_dir


def _covering(path: PurePosixPath, mounts: Sequence[Mount]) -> Mount | None:
    """The innermost mount holding `path`."""
    holding = [m for m in mounts if _within(path, PurePosixPath(m.destination))]
    return max(holding, key=lambda m: len(PurePosixPath(m.destination).parts), default=None)


def mount_problem(
    data_dir: PurePosixPath, mounts: Sequence[Mount], secrets_dir: PurePosixPath | None = None
) -> str | None:
    """The refusal message when `data_dir` (inside this container) is not the host's folder at
    the same path, with the same for every mount below it, or when the folder holding
    `secrets_dir` (docker.secrets_dir) is not; None when all is well."""
    faults = []
    fault = _fault(_covering(data_dir, mounts))
    if fault:
        faults.append(f"the data directory {data_dir} {fault}")
    for mount in mounts:
        inner = PurePosixPath(mount.destination)
        if inner != data_dir and _within(inner, data_dir):
            fault = _fault(mount)
            if fault:
                faults.append(f"{inner}, inside the data directory, {fault}")
    if faults:
        host = host_path_for(data_dir, mounts)
        return (
            f"refusing to start: this server runs in a container and {'; '.join(faults)}.\n"
            f"{_WHY}\nMount a host folder at the same path and point data_dir at it, e.g.:\n"
            f"    docker run ... -v {host}:{host} -e NVCF_LITE_STORE__DATA_DIR={host} ..."
        )
    fault = None if secrets_dir is None else _fault(_covering(secrets_dir, mounts))
    if fault is None or secrets_dir is None:
        return None
    # the parent: /run/nvcf-lite for the default /run/nvcf-lite/secrets
    folder = secrets_dir.parent
    return (
        f"refusing to start: this server runs in a container and the secrets folder "
        f"{secrets_dir} (docker.secrets_dir) {fault}.\nFunction containers mount each "
        "instance's folder under it at /var/secrets from the host, so they would see no "
        "secrets.json. Mount a host folder in memory (tmpfs, such as one under /run) at the "
        f"same path, e.g.:\n    docker run ... -v {folder}:{folder} ..."
    )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _own_mounts(base_url: str, ids: Sequence[str]) -> list[Mount] | None:
    """This container's mounts as the Docker engine sees them; None if it cannot say."""
    import docker
    import docker.errors
    import requests

    try:
        api = docker.APIClient(base_url=base_url, timeout=10)
    except docker.errors.DockerException as exc:
        log.warning("cannot check the data directory mount: Docker: %s", exc)
        return None
    try:
        for cid in ids:
            try:
                doc = api.inspect_container(cid)
            except docker.errors.NotFound:
                continue
            return [Mount.from_inspect(m) for m in doc.get("Mounts") or []]
    except (docker.errors.DockerException, requests.RequestException) as exc:
        log.warning("cannot check the data directory mount: Docker: %s", exc)
        return None
    finally:
        api.close()
    # Another engine runs this container (nested Docker): that engine's host is not ours, and
    # the one we drive resolves mount sources where we are.
    log.info("the Docker engine does not know container %s: no data mount check", ids[0][:12])
    return None


def data_mount_problem(
    data_dir: Path,
    base_url: str | None = None,
    *,
    root: Path = Path("/"),
    secrets_dir: Path | None = None,
) -> str | None:
    """Outside a container: None at once, no Docker call. Inside one: the refusal message when
    data_dir is not the host's folder at the same path; None when it is, or when the engine
    cannot tell (no engine means no function containers, and the API still serves)."""
    proc = root / "proc" / "self"
    ids = container_ids(_read(proc / "mountinfo"), _read(proc / "cgroup"))
    if not ids:
        # Not in a container, or in one no engine we could ask would know (a bare /.dockerenv
        # is common on build machines that are themselves containers).
        return None
    url = engine_url(base_url)
    mounts = _own_mounts(url, ids)
    if mounts is None:
        return None
    secrets = PurePosixPath(secrets_dir) if secrets_dir is not None else None
    return mount_problem(PurePosixPath(data_dir), mounts, secrets)
