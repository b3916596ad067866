"""A real Docker registry on 127.0.0.1: Debian's `docker-registry` (distribution 2.8), with
htpasswd (bcrypt) auth or none, storing on the file system under a tmp folder.

`LocalRegistry(folder, users={"puller": "pw"})` starts `docker-registry serve <config.yml>` on a
free loopback port and waits until `/v2/` answers. `push(source, name)` uploads a local test
image through the registry API as a new image: its layers re-gzipped with a fresh header plus
a small layer of its own (registry_support.build_image), so every push has digests the engine
has never seen and a pull downloads every byte. Nothing logs the engine in: the upload carries
the Basic credentials itself. `close()` stops the registry and removes every image pulled from
it. The Docker engine treats registries on 127.0.0.0/8 as insecure (plain HTTP) by default.

Without the binaries (`apt-get install docker-registry apache2-utils`) the tests skip; with
NVCF_LITE_REQUIRE_DOCKER=1 (CI) that is a failure.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import pytest
from docker_support import REQUIRE_ENV, docker_required
from registry_support import MANIFEST_V2, build_image, saved_image
from server_support import free_port

REGISTRY_BINARY = "/usr/bin/docker-registry"
HTPASSWD = "htpasswd"
PACKAGES = "docker-registry apache2-utils"


def binaries_or_skip() -> tuple[str, str]:
    """The registry and htpasswd binaries, or skip (fail under NVCF_LITE_REQUIRE_DOCKER=1)."""
    registry = (
        REGISTRY_BINARY if Path(REGISTRY_BINARY).is_file() else shutil.which("docker-registry")
    )
    htpasswd = shutil.which(HTPASSWD)
    if registry and htpasswd:
        return registry, htpasswd
    reason = f"no docker-registry or htpasswd binary (apt-get install {PACKAGES})"
    if docker_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


class LocalRegistry:
    __test__ = False

    def __init__(
        self, client: docker.DockerClient, folder: Path, users: dict[str, str] | None = None
    ) -> None:
        binary, htpasswd = binaries_or_skip()
        self.client, self.folder, self.users = client, folder, dict(users or {})
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.pushed: list[str] = []
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "config.yml"
        config.write_text(json.dumps(self._config(htpasswd)))  # YAML accepts JSON
        self.log = (folder / "registry.log").open("wb")
        self.process = subprocess.Popen(
            [binary, "serve", str(config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _config(self, htpasswd: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.folder / "data")}},
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if self.users:
            lines = [
                subprocess.run(
                    [htpasswd, "-Bbn", user, password], check=True, capture_output=True, text=True
                ).stdout.strip()
                for user, password in self.users.items()
            ]
            (self.folder / "htpasswd").write_text("\n".join(lines) + "\n")
            doc["auth"] = {
                "htpasswd": {"realm": "nvcf-lite-test", "path": str(self.folder / "htpasswd")}
            }
        return doc

    def _wait_ready(self, limit_s: float = 20.0) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_text()}")
            try:
                status, _, _ = self._request("GET", "/v2/")
            except OSError:
                time.sleep(0.05)
                continue
            if status in (200, 401):
                return
        raise RuntimeError(f"docker-registry did not answer on {self.host}: {self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return (self.folder / "registry.log").read_text(errors="replace")[-2000:]

    def _request(
        self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            sent = dict(headers or {})
            if self.users:
                user, password = next(iter(self.users.items()))
                token = base64.b64encode(f"{user}:{password}".encode()).decode()
                sent["Authorization"] = f"Basic {token}"
            conn.request(method, target, body=body, headers=sent)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def push(self, source: str, name: str, tag: str = "1") -> str:
        """Upload `source` (a local image) as a new image `name:tag`; its pull reference."""
        image = build_image(*saved_image(self.client, source))
        for blob_digest, data in image.blobs.items():
            status, headers, text = self._request("POST", f"/v2/{name}/blobs/uploads/")
            assert status == 202, (status, text)
            location = urlsplit(headers["location"])
            target = f"{location.path}?{location.query}&digest={blob_digest}"
            kind = {"Content-Type": "application/octet-stream"}
            status, _, text = self._request("PUT", target, data, kind)
            assert status == 201, (status, text)
        kind = {"Content-Type": MANIFEST_V2}
        status, _, text = self._request("PUT", f"/v2/{name}/manifests/{tag}", image.manifest, kind)
        assert status == 201, (status, text)
        ref = f"{self.host}/{name}:{tag}"
        self.pushed.append(ref)
        return ref

    def retag(self, name: str, tag: str, new_tag: str) -> str:
        """The image `name:tag` also as `name:new_tag` (the same manifest); its reference."""
        accept = {"Accept": MANIFEST_V2}
        status, _, manifest = self._request("GET", f"/v2/{name}/manifests/{tag}", b"", accept)
        assert status == 200, (status, manifest)
        kind = {"Content-Type": MANIFEST_V2}
        status, _, text = self._request("PUT", f"/v2/{name}/manifests/{new_tag}", manifest, kind)
        assert status == 201, (status, text)
        ref = f"{self.host}/{name}:{new_tag}"
        self.pushed.append(ref)
        return ref

    def forget(self, ref: str) -> None:
        """Remove a pulled image from the engine, so the next pull downloads it again."""
        try:
            self.client.images.remove(ref, force=True)
        except docker.errors.ImageNotFound:
            pass

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        for ref in self.pushed:
            self.forget(ref)

    def __enter__(self) -> LocalRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
