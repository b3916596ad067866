"""DockerRuntime: instance containers on the local Docker engine.

With runtime/docker_calls.py (the blocking calls) the only code importing docker. Blocking SDK
calls run in worker threads through the low-level `APIClient`, one HTTP call per hop where
possible (`inspect` is exactly one). Docker's exceptions are translated here, at the edge, into
`RuntimeFailure` / `ImageNotFound` whose text a user can act on.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import docker
import docker.errors
import requests

from nvcf_lite.runtime import docker_calls as calls
from nvcf_lite.runtime import docker_logs
from nvcf_lite.runtime.base import (
    LABEL_MANAGED,
    ContainerInfo,
    ContainerSpec,
    ImageNotFound,
    PullProgress,
    PullRefused,
    RegistryAuth,
    RuntimeFailure,
    engine_url,
)
from nvcf_lite.runtime.pull_progress import PullStalled, PullStop, PullStopped, PullTracker

log = logging.getLogger("nvcf_lite.runtime")

NO_TOOLKIT = "this Docker host has no NVIDIA container toolkit"
# The toolkit's prestart hook failing, e.g. "nvidia-container-cli: initialization error: nvml
# error: driver not loaded" or "nvidia-container-cli: device error: GPU-...: unknown device"
_TOOLKIT_ERROR = re.compile(r"nvidia-container-cli: [^\n]*?(?=(?::\s*unknown)?\s*$)", re.M)
_UNREACHABLE_HINTS = {
    "FileNotFoundError": "no socket there, is dockerd running?",
    "ConnectionRefusedError": "connection refused, is dockerd running?",
    "PermissionError": "permission denied, may this user use Docker (the docker group)?",
}
T = TypeVar("T")


class DockerRuntime:
    """`ContainerRuntime` on Docker. Build it with `connect`, which never raises."""

    def __init__(self, base_url: str, *, api_timeout_s: float, pull_timeout_s: float) -> None:
        self.base_url = base_url
        self.pull_timeout_s = pull_timeout_s
        self._api: Any = None  # docker.APIClient once the engine has answered
        self._connect_error: str | None = None
        self._closed = False
        self._api_timeout_s = api_timeout_s
        self._connecting = asyncio.Lock()
        self._pulls: dict[str, asyncio.Task[None]] = {}
        self._trackers: dict[str, PullTracker] = {}

    @classmethod
    def connect(
        cls,
        base_url: str | None = None,
        *,
        api_timeout_s: float = 60.0,
        pull_timeout_s: float = 120.0,
    ) -> DockerRuntime:
        """Connect to `base_url` (default: $DOCKER_HOST, else the local socket).

        An absent daemon is not an error here: `ping()` says why, and every other call raises
        `RuntimeFailure` with that reason until the daemon answers (reconnects are lazy).
        """
        url = engine_url(base_url)
        runtime = cls(url, api_timeout_s=api_timeout_s, pull_timeout_s=pull_timeout_s)
        runtime._try_connect()
        return runtime

    # ContainerRuntime --------------------------------------------------------------------

    async def ping(self) -> str | None:
        try:
            await self._call("ping", lambda api: api.ping())
        except RuntimeFailure as exc:
            return str(exc)
        return None

    async def image_exists(self, image: str) -> bool:
        return await self._call("image inspect", calls.image_exists, image)

    async def ensure_image(self, image: str, auth: RegistryAuth | None = None) -> bool:
        """Pull `image` unless it is local; concurrent callers for one image share one pull
        (the first caller's `auth` is the one sent)."""
        pull = self._pulls.get(image)
        if pull is None:
            if await self.image_exists(image):
                return False
            pull = self._pulls.get(image)  # another caller may have started it meanwhile
        if pull is None:
            # shared by every instance that needs the image: its lines carry none's ids
            pull = asyncio.get_running_loop().create_task(
                self._pull(image, auth), context=contextvars.Context()
            )
            self._pulls[image] = pull
            pull.add_done_callback(lambda task: self._forget_pull(image, task))
        await asyncio.shield(pull)
        return True

    async def create_and_start(self, spec: ContainerSpec) -> ContainerInfo:
        try:
            return await self._call("create", calls.create_and_start, spec, name=spec.name)
        except ImageNotFound:
            await self.ensure_image(spec.image)
        return await self._call("create", calls.create_and_start, spec, name=spec.name)

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        return await self._call("inspect", calls.inspect, container_id)

    async def list_managed(self) -> list[ContainerInfo]:
        """Every managed container, from one list call.

        List entries carry no State.Error / StartedAt / FinishedAt / OOMKilled; the exit code
        comes from the status text. Use `inspect` for the full record of one container.
        """
        filters = {"label": f"{LABEL_MANAGED}=true"}
        rows = await self._call("list", lambda api: api.containers(all=True, filters=filters))
        return [calls.info_from_summary(row) for row in rows]

    async def remove(self, container_id: str, *, stop_timeout_s: float = 5.0) -> None:
        await self._call("remove", calls.stop_and_remove, container_id, stop_timeout_s)

    async def logs_tail(self, container_id: str, lines: int = 20) -> str:
        return await self._call("logs", calls.logs_tail, container_id, lines)

    async def stop(self, container_id: str, *, stop_timeout_s: float = 5.0) -> None:
        await self._call("stop", docker_logs.stop_only, container_id, stop_timeout_s)

    async def logs(
        self, container_id: str, *, tail: int | None = None, follow: bool = False
    ) -> AsyncIterator[bytes]:
        api = await self._client()
        chunks = docker_logs.stream(
            lambda: docker_logs.open_logs(api, container_id, tail, follow),
            lambda exc: self._translate(exc, "logs", ""),
        )
        async for chunk in chunks:
            yield chunk

    async def pause(self, container_id: str) -> None:
        await self._call("pause", lambda api: api.pause(container_id))

    async def unpause(self, container_id: str) -> None:
        await self._call("unpause", lambda api: api.unpause(container_id))

    async def unavailable_units(self) -> set[str]:
        return set()

    async def call(self, action: str, fn: Callable[..., T], *args: Any, name: str = "") -> T:
        """`fn(api, *args)` in a worker thread, Docker's exceptions translated (for engines
        built on this one, runtime/swarm.py)."""
        return await self._call(action, fn, *args, name=name)

    async def close(self) -> None:
        for pull in list(self._pulls.values()):
            pull.cancel()
        if self._api is not None:
            self._api.close()
            self._api = None
        self._closed = True
        self._connect_error = f"Docker engine not reachable at {self.base_url}: runtime closed"

    # Internals ---------------------------------------------------------------------------

    def _try_connect(self) -> None:
        try:
            self._api = docker.APIClient(
                base_url=self.base_url, version="auto", timeout=self._api_timeout_s
            )
            self._connect_error = None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            self._connect_error = self._unreachable(exc)

    async def _client(self) -> Any:
        if self._api is None:
            async with self._connecting:
                if self._api is None and not self._closed:
                    await asyncio.to_thread(self._try_connect)
        if self._api is None:
            raise RuntimeFailure(self._connect_error or self._unreachable(None))
        return self._api

    async def _call(self, action: str, fn: Callable[..., T], *args: Any, name: str = "") -> T:
        """`fn(api, *args)` in a worker thread, with Docker's exceptions translated."""
        api = await self._client()
        try:
            return await asyncio.to_thread(fn, api, *args)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise self._translate(exc, action, name) from exc

    def _translate(self, exc: Exception, action: str, name: str) -> RuntimeFailure:
        if isinstance(exc, docker.errors.APIError):
            text = calls.explain(exc)
            if "could not select device driver" in text:
                return RuntimeFailure(f"{NO_TOOLKIT} (could not select device driver for GPUs)")
            if "unknown runtime specified nvidia" in text.lower():
                return RuntimeFailure(f"{NO_TOOLKIT} (Unknown runtime specified nvidia)")
            toolkit = _TOOLKIT_ERROR.search(text)
            if toolkit:
                return RuntimeFailure(f"the NVIDIA container toolkit refused: {toolkit.group(0)}")
            if exc.status_code == 409 and "is already in use" in text:
                return RuntimeFailure(f"a container named {name!r} already exists: {text}")
            if isinstance(exc, docker.errors.ImageNotFound):
                return ImageNotFound(f"image is not present locally: {text}")
            return RuntimeFailure(f"Docker {action} failed: {text}")
        if isinstance(exc, requests.exceptions.Timeout):
            return RuntimeFailure(
                f"Docker engine at {self.base_url} did not answer {action} "
                f"within {self._api_timeout_s:g} s"
            )
        return RuntimeFailure(self._unreachable(exc))

    def _unreachable(self, exc: Exception | None) -> str:
        text = str(exc or "not connected")
        hint = next((h for cause, h in _UNREACHABLE_HINTS.items() if cause in text), None)
        return f"Docker engine not reachable at {self.base_url}: " + (
            f"{hint} ({text})" if hint else text
        )

    def pull_progress(self, image: str) -> PullProgress | None:
        tracker = self._trackers.get(image)
        return tracker.snapshot() if tracker is not None else None

    async def _pull(self, image: str, auth: RegistryAuth | None) -> None:
        """Stream the pull; it fails only after `pull_timeout_s` without progress."""
        api = await self._client()
        tracker = PullTracker(image)
        stop = PullStop()
        self._trackers[image] = tracker
        log.info("pulling image %s (fails after %g s without progress)", image, self.pull_timeout_s)
        try:
            await asyncio.to_thread(
                calls.pull, api, tracker, self._api_timeout_s, self.pull_timeout_s, stop, auth
            )
        except asyncio.CancelledError:
            stop.set()  # shuts the pull's socket down: the thread ends at once
            raise
        except PullStalled as exc:
            raise RuntimeFailure(f"pulling image {image!r} stalled: {exc}") from exc
        except PullStopped as exc:
            raise RuntimeFailure(f"pulling image {image!r} stopped: runtime closed") from exc
        except docker.errors.APIError as exc:
            reason = calls.explain(exc)
        except requests.exceptions.RequestException as exc:
            raise self._translate(exc, "pull", "") from exc
        except docker.errors.DockerException as exc:  # e.g. InvalidRepository
            reason = str(exc)
        else:
            p = tracker.snapshot()
            log.info(
                "pulled image %s: %d layers, %.1f MB in %.1f s",
                image,
                p.layers_total,
                p.bytes_total / 1e6,
                p.elapsed_s,
            )
            return
        finally:
            self._trackers.pop(image, None)
        if calls.refused_for_auth(reason):
            raise PullRefused(image, auth, reason)
        raise ImageNotFound(
            f"image {image!r} is not present locally and could not be pulled: {reason}"
        )

    def _forget_pull(self, image: str, task: asyncio.Task[None]) -> None:
        if self._pulls.get(image) is task:
            del self._pulls[image]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter got it, or none was left to care


# Blocking helpers (run in worker threads) -------------------------------------------------
