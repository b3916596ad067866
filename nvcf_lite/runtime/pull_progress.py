"""Following one image pull: Docker's status lines become per-layer progress (`PullTracker`),
and the event loop can end a pull that is blocked reading (`PullStop`). No docker-py here:
runtime/docker_calls.py feeds the lines, runtime/docker.py reads the snapshots."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from nvcf_lite.models import PullProgress

_DOWNLOADED = ("Verifying Checksum", "Download complete", "Extracting")
_LAYER_DONE = ("Pull complete", "Already exists")


class PullStalled(Exception):
    """No progress for the stall window; `str(exc)` says how far the pull got."""


class PullStopped(Exception):
    """The runtime closed while the pull ran."""


class PullStop:
    """Set from the event loop to end a pull: it shuts the pull's socket down, so a read
    blocked on a silent engine returns at once instead of after the stall window."""

    def __init__(self) -> None:
        self._set = threading.Event()
        self._lock = threading.Lock()
        self._socket: Any = None

    def attach(self, sock: Any) -> None:
        with self._lock:
            self._socket = sock
            if self._set.is_set():
                self._shutdown()

    def set(self) -> None:
        with self._lock:
            self._set.set()
            self._shutdown()

    def is_set(self) -> bool:
        return self._set.is_set()

    def _shutdown(self) -> None:
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError):
            pass  # no socket yet, or already closed


class _Layer:
    def __init__(self) -> None:
        self.current = self.total = self.extracted = 0
        self.done = False
        self.status = ""


class PullTracker:
    """One pull's per-layer progress, fed Docker's status lines by the pulling thread and read
    (as `PullProgress` snapshots) by the event loop. Progress is any change in the layers'
    bytes or states; repeated identical lines are not progress."""

    def __init__(self, image: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.image, self.clock = image, clock
        self.started = self.last_progress = clock()
        self.status = "waiting for the registry"
        self._layers: dict[str, _Layer] = {}
        self._lock = threading.Lock()
        self._key: tuple[int, ...] = ()
        self._logged_tenths = self._logged_total = 0

    def feed(self, line: dict[str, Any]) -> str | None:
        """Take one status line; returns a log message at a milestone (a layer complete, each
        10% of the known bytes), else None."""
        status, layer_id = str(line.get("status", "")), line.get("id")
        with self._lock:
            layer = None
            if layer_id and not status.startswith("Pulling from"):
                layer = self._layers.setdefault(str(layer_id), _Layer())
                _apply(layer, status, line.get("progressDetail") or {})
            if status:
                self.status = status
            key = self._progress_key()
            if key != self._key:
                self._key, self.last_progress = key, self.clock()
            p = self._snapshot()
        if layer is not None and status in _LAYER_DONE:
            return f"{p.text()} (layer {layer_id}: {status.lower()})"
        tenths = 10 * p.bytes_done // p.bytes_total if p.bytes_total else 0
        if p.bytes_total != self._logged_total:  # a layer's size became known: new baseline
            self._logged_total, self._logged_tenths = p.bytes_total, tenths
        elif tenths > self._logged_tenths:
            self._logged_tenths = tenths
            return p.text()
        return None

    def idle_s(self) -> float:
        return self.clock() - self.last_progress

    def snapshot(self) -> PullProgress:
        with self._lock:
            return self._snapshot()

    def _progress_key(self) -> tuple[int, ...]:
        layers = self._layers.values()
        return (
            len(self._layers),
            sum(x.done for x in layers),
            sum(x.current for x in layers),
            sum(x.extracted for x in layers),
            sum(x.total for x in layers),
        )

    def _snapshot(self) -> PullProgress:
        layers = list(self._layers.values())
        now = self.clock()
        return PullProgress(
            image=self.image,
            layers_done=sum(x.done for x in layers),
            layers_total=len(layers),
            bytes_done=sum(x.current for x in layers),
            bytes_total=sum(x.total for x in layers),
            status=self.status,
            elapsed_s=round(now - self.started, 3),
            idle_s=round(now - self.last_progress, 3),
        )


def _apply(layer: _Layer, status: str, detail: dict[str, Any]) -> None:
    layer.status = status
    current, total = int(detail.get("current") or 0), int(detail.get("total") or 0)
    if status == "Downloading":
        layer.current, layer.total = current, max(layer.total, total)
    elif status == "Extracting":
        layer.extracted = current
    if status in _DOWNLOADED or status in _LAYER_DONE:
        layer.current = layer.total
    layer.done = layer.done or status in _LAYER_DONE
