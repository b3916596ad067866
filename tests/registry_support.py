"""A minimal Docker Registry HTTP API v2 on 127.0.0.1, for real pulls without any registry.

`TestRegistry` serves one image made from a local test image: `docker save` gives its config
and layer tars; the registry adds one small layer of its own (a file with a random token) and
gzips every layer with a fresh header, so each registry's image, layer digests and image id
are new to the engine (it has to download every byte, no "Already exists"). It answers
`GET/HEAD /v2/`, `/v2/<name>/manifests/<tag|digest>` (schema 2) and `/v2/<name>/blobs/<digest>`.
The Docker engine treats registries on 127.0.0.0/8 as insecure (plain HTTP) by default.

Auth: with `basic_auth=(username, password)` every request needs those Basic credentials; any
other gets 401 with a Basic challenge, as a registry behind htpasswd answers.

Throttling: `rate_bytes_s` sends layer blobs at that rate, in small chunks, so a pull can take
longer than a stall window while progressing all the time. `stall_after_bytes` sends that much
of the largest layer and then nothing more until the registry closes (a hung registry).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import secrets
import tarfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import docker

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CHUNK = 32 * 1024

_saved: dict[str, tuple[bytes, list[bytes]]] = {}  # source image -> (config, layer tars)


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def saved_image(client: docker.DockerClient, source: str) -> tuple[bytes, list[bytes]]:
    """The config JSON and the uncompressed layer tars of a local image (`docker save`)."""
    if source not in _saved:
        raw = b"".join(client.images.get(source).save(named=False))
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:

            def member(name: str) -> bytes:
                f = tar.extractfile(name)
                assert f is not None, name
                return f.read()

            manifest = json.loads(member("manifest.json"))[0]
            _saved[source] = (member(manifest["Config"]), [member(p) for p in manifest["Layers"]])
    return _saved[source]


def _token_layer(token: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = token.encode()
        info = tarfile.TarInfo("nvcf-lite-pull-test")
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@dataclass
class _Image:
    manifest: bytes
    blobs: dict[str, bytes] = field(default_factory=dict)
    layer_digests: list[str] = field(default_factory=list)


def build_image(config: bytes, layers: list[bytes]) -> _Image:
    token = secrets.token_hex(8)
    tars = [*layers, _token_layer(token)]
    doc: dict[str, Any] = json.loads(config)
    doc["rootfs"]["diff_ids"] = [digest(t) for t in tars]
    history = doc.setdefault("history", [])
    history.append({"created": "2026-01-01T00:00:00Z", "created_by": f"test registry {token}"})
    config_blob = json.dumps(doc).encode()
    image = _Image(manifest=b"")
    image.blobs[digest(config_blob)] = config_blob
    entries = []
    for t in tars:
        blob = gzip.compress(t, compresslevel=1, mtime=int(time.time()) ^ secrets.randbits(20))
        image.blobs[digest(blob)] = blob
        image.layer_digests.append(digest(blob))
        entries.append({"mediaType": LAYER_GZIP, "size": len(blob), "digest": digest(blob)})
    image.manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {
                "mediaType": CONFIG_V1,
                "size": len(config_blob),
                "digest": digest(config_blob),
            },
            "layers": entries,
        }
    ).encode()
    return image


class TestRegistry:
    """`with TestRegistry(client, "nvcf-lite-test/echo:1") as reg:` then pull `reg.image`."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        client: docker.DockerClient,
        source: str,
        *,
        name: str = "nvcf-lite-test/pulled",
        tag: str = "1",
        rate_bytes_s: float | None = None,
        stall_after_bytes: int | None = None,
        basic_auth: tuple[str, str] | None = None,
        host: str = "127.0.0.1",  # another loopback address: one a swarm's nodes reach
    ) -> None:
        self.client, self.name, self.tag, self.host = client, name, tag, host
        self.basic_auth = basic_auth
        self.rate_bytes_s, self.stall_after_bytes = rate_bytes_s, stall_after_bytes
        self.built = build_image(*saved_image(client, source))
        self.closing = threading.Event()
        self.requests: list[str] = []  # "GET /v2/..." in arrival order
        self.server = ThreadingHTTPServer((host, 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def image(self) -> str:
        return f"{self.host}:{self.port}/{self.name}:{self.tag}"

    @property
    def layer_sizes(self) -> list[int]:
        return [len(self.built.blobs[d]) for d in self.built.layer_digests]

    def __enter__(self) -> TestRegistry:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving, release hung downloads, and remove the image from the engine."""
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
        try:
            self.client.images.remove(self.image, force=True)
        except docker.errors.ImageNotFound:
            pass

    def blob_body(self, data: bytes, send: Any) -> None:
        """Send a blob: all at once, throttled, or part of it and then hang."""
        largest = max(self.layer_sizes)
        stall = self.stall_after_bytes if len(data) == largest else None
        sent = 0
        started = time.monotonic()
        while sent < len(data) and not self.closing.is_set():
            if stall is not None and sent >= stall:
                self.closing.wait()  # a hung registry: the connection stays open, silent
                return
            chunk = data[sent : sent + CHUNK]
            send(chunk)
            sent += len(chunk)
            if self.rate_bytes_s:
                ahead = sent / self.rate_bytes_s - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)


def _basic(credentials: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(":".join(credentials).encode()).decode()


def _handler(registry: TestRegistry) -> type[BaseHTTPRequestHandler]:
    built = registry.built
    prefix = f"/v2/{registry.name}/"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            registry.requests.append(f"{self.command} {self.path}")
            if registry.basic_auth and self.headers.get("Authorization") != _basic(
                registry.basic_auth
            ):
                error = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
                self.close_connection = True
                return self._send(401, json.dumps(error).encode(), "application/json", body)
            path = self.path.split("?")[0]
            if path in ("/v2", "/v2/"):
                return self._send(200, b"{}", "application/json", body)
            if path.startswith(prefix + "manifests/"):
                ref = path.rsplit("/", 1)[1]
                if ref in (registry.tag, digest(built.manifest)):
                    return self._send(
                        200, built.manifest, MANIFEST_V2, body, digest(built.manifest)
                    )
            if path.startswith(prefix + "blobs/"):
                data = built.blobs.get(path.rsplit("/", 1)[1])
                if data is not None:
                    return self._send(200, data, "application/octet-stream", body, digest(data))
            error = {"errors": [{"code": "NAME_UNKNOWN", "message": "unknown", "detail": path}]}
            self._send(404, json.dumps(error).encode(), "application/json", body)

        def _send(
            self, status: int, data: bytes, kind: str, body: bool, ref: str | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="nvcf-lite-test"')
            if ref:
                self.send_header("Docker-Content-Digest", ref)
            self.end_headers()
            if not body:
                return
            try:
                if "/blobs/" in self.path:
                    registry.blob_body(data, self.wfile.write)
                else:
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler
