"""Helpers for the model store tests: trees on disk, tar bodies, pushes over HTTP, the probe.

`scripts/store_probe_server.py` is the function the Docker tests push as a resource and run
from its mount: it reports every file under /config with its sha256, and whether a write into
/config/models worked.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

from conftest import bearer
from litestar.testing import TestClient

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "scripts" / "store_probe_server.py"
PROBE_COMMAND = "python3 /config/resources/probe/store_probe_server.py"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    """A folder holding `files` (relative path -> bytes)."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def tar_body(files: dict[str, bytes], *, gz: bool = False) -> bytes:
    """A tar (or tar.gz) archive of `files`, as a push body."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if gz else "w") as tar:
        for rel, data in files.items():
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def store_path(kind: str, name: str | None = None, version: str | None = None) -> str:
    base = f"/v2/nvcf-lite/{kind}s"
    return base if name is None else f"{base}/{name}/versions/{version}"


def push(
    api: TestClient[Any],
    kind: str,
    name: str,
    version: str,
    files: dict[str, bytes],
    key: str | None = None,
) -> dict[str, Any]:
    """PUT a tar of `files` as kind/name/version; the stored artifact."""
    headers = bearer(key) if key else bearer()
    r = api.put(store_path(kind, name, version), content=tar_body(files), headers=headers)
    assert r.status_code == 200, r.text
    artifact: dict[str, Any] = r.json()["artifact"]
    return artifact


def push_probe(api: TestClient[Any]) -> dict[str, Any]:
    """The probe server as resource `probe` version 1."""
    return push(api, "resource", "probe", "1", {"store_probe_server.py": PROBE.read_bytes()})
