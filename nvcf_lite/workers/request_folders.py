"""Per-request folders (spec §4.3): `<inf>/response/<reqId>` exists when the request reaches
its container and goes after the request; `<inf>/inputAssets/<reqId>` when assets were staged.

Making and removing a folder per request is the most expensive thing a small request does
(on ext4 mkdir + chmod + rmdir cost ~70 µs of kernel time), and doing it on a worker thread
is worse: under load each call waits up to the GIL's switch interval to get back in (a batch
of 512 took 21 s against a busy event loop). So folders are **recycled**: a folder nothing
was written into goes back to a free list when its request ends, and is renamed (~7 µs, no
chmod, the same inotify watch) to the id of a future request, in batches on the event loop
between requests. Request ids are handed out with their folder ready; a forwarded request
makes no file-system call on its own path. New folders are made only when more requests are
in flight than ever before (a batch of mkdirs on the loop).

"Did the container write anything?" is answered from inotify events (each folder is watched
once, when made; spec §4.5 has NVCF's worker watch them too): the kernel queues the event of a
container's write before the container sends its answer, so the event is read on the loop no
later than the answer (the inotify descriptor is ready in the same poll). A folder something
was written into (the progress file included) is not recycled: it is removed on a worker
thread with whatever is beside it, which is rare and off the request path. Without inotify
(or past the watch limit) a folder is looked at instead (one scandir) and never recycled.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from nvcf_lite.models import new_id
from nvcf_lite.runtime.inotify import Inotify

log = logging.getLogger("nvcf_lite.workers")

# Ids ready with their folder: refilled (on the loop, a chunk per callback) below READY_LOW.
READY_TARGET, READY_LOW, CHUNK = 256, 128, 64
MAX_READY = 4096  # after a burst, folders beyond this many ready ones are removed
SWEEP_EVERY_S = 0.5
PROGRESS = "progress"  # the progress file (§4.5) is not output
RESPONSE, INPUT_ASSETS = "response", "inputAssets"


@dataclass
class FolderStats:
    """What the folders cost, for tests and the benchmark."""

    on_path: int = 0  # file-system calls on a request's own path (fallbacks only)
    renamed: int = 0  # recycled folders renamed for a new id (batched, between requests)
    made: int = 0  # new folders made (batched, between requests)
    removed: int = 0  # folders handed to the worker thread for removal
    sweeps: int = 0  # thread hops (removal batches)
    scans: int = 0  # folders looked at because no inotify answer was available


class RequestFolders:
    def __init__(self, inf_dir: str) -> None:
        self.inf_dir = inf_dir
        self.response_root = f"{inf_dir}/{RESPONSE}"
        self.assets_root = f"{inf_dir}/{INPUT_ASSETS}"
        self.stats = FolderStats()
        self._ready: deque[str] = deque()  # ids whose folder exists, oldest first
        # clean, watched folders of finished requests, renamed for new ids on the next turn
        self._free: list[str] = []
        self._made: set[str] = set()  # ids (ready or in use) whose response folder exists
        self._wd: dict[str, int] = {}  # id -> its folder's watch descriptor
        self._by_wd: dict[int, str] = {}
        self._touched: set[str] = set()  # ids whose folder had an entry created in it
        self._dirty: set[str] = set()  # ... other than the progress file
        self._extra: set[str] = set()  # ids with a <id>.response / <id>.zip file beside
        # ids whose container answered in full: nothing of theirs can still be writing
        self._settled: set[str] = set()
        # id -> called when its container has written its progress file (spec §4.5)
        self._progress: dict[str, Callable[[], object]] = {}
        # (id, remove its output folder, remove its staged assets), removed on a thread
        self._trash: list[tuple[str, bool, bool]] = []
        self._refilling = False
        self._sweeper: asyncio.Future[None] | None = None
        self._inotify: Inotify | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Before anything is served: empty folders a killed process left (ready ones, or
        of requests that will run again and get a new one) go; the watcher starts."""
        os.makedirs(self.response_root, exist_ok=True)
        _remove_empty_dirs(self.response_root)
        self._loop = asyncio.get_running_loop()
        self._inotify = Inotify.open()
        if self._inotify is not None:
            self._loop.add_reader(self._inotify.fd, self._read_events)
        self._sweeper = asyncio.ensure_future(self._sweep_loop())
        self._refill_soon()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        self._trash.extend((request_id, True, False) for request_id in self._ready)
        self._trash.extend((request_id, True, False) for request_id in self._free)
        self._ready.clear()
        self._free.clear()
        await self.sweep()
        if self._inotify is not None and self._loop is not None:
            self._loop.remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None

    # -- handing out ids ------------------------------------------------------------------

    def take_request_id(self) -> str:
        """A new request id whose large-output folder already exists, when one is ready."""
        if len(self._ready) < READY_LOW:
            self._refill_soon()
        if self._ready:
            return self._ready.popleft()
        return new_id()  # its folder is made when it is forwarded (out_dir)

    def _refill_soon(self) -> None:
        if not self._refilling and self._loop is not None:
            self._refilling = True
            self._loop.call_soon(self._refill)

    def _refill(self) -> None:
        """One chunk: free folders renamed to new ids (so no folder keeps the name of a
        finished request for longer than a loop turn), then new ones made up to
        READY_TARGET. Runs on the loop between requests; reschedules itself while needed."""
        self._refilling = False
        self._read_events()
        for _ in range(CHUNK):
            request_id = new_id()
            try:
                if self._recycle(request_id):
                    pass
                elif len(self._ready) < READY_TARGET:
                    self._make(request_id)
                else:
                    return
            except OSError as exc:
                log.warning("could not make request folders ahead: %s", exc)
                return
            self._ready.append(request_id)
        self._refill_soon()

    def _recycle(self, request_id: str) -> bool:
        """Rename a free folder to `request_id`; False when none is free. The caller reads
        pending inotify events first (once per batch), so a write that raced the end of its
        request shows as `_touched`."""
        while self._free:
            old = self._free.pop()
            if len(self._ready) >= MAX_READY or old in self._touched or old not in self._wd:
                self._discard(old)  # not needed, or written into after its request ended
                continue
            try:
                self._rename(old, request_id)
            except FileNotFoundError:
                self._discard(old)
                continue
            except OSError:  # the target exists (a recovered request's folder): keep `old`
                self._free.append(old)
                return False
            return True
        return False

    def _rename(self, old: str, new: str) -> None:
        os.rename(f"{self.response_root}/{old}", f"{self.response_root}/{new}")
        self.stats.renamed += 1
        wd = self._wd.pop(old)
        self._wd[new] = wd
        self._by_wd[wd] = new
        self._made.add(new)

    def _make(self, request_id: str) -> None:
        path = f"{self.response_root}/{request_id}"
        try:
            os.mkdir(path)
        except FileNotFoundError:
            os.makedirs(path, exist_ok=True)
        except FileExistsError:
            # a request run again after a restart: what its first attempt left is in there
            self._touched.add(request_id)
            self._dirty.add(request_id)
        os.chmod(path, 0o777)  # the container's user may not be root
        self.stats.made += 1
        self._made.add(request_id)
        wd = self._inotify.add(path) if self._inotify is not None else -1
        if wd >= 0:
            self._wd[request_id] = wd
            self._by_wd[wd] = request_id

    def out_dir(self, request_id: str) -> str:
        """The request's large-output folder, made now if it was not ready (a request
        recovered after a restart, or more accepted at once than were ready, as in a burst
        of requests that queue): a free folder renamed when there is one, else a new one."""
        if request_id not in self._made:
            self.stats.on_path += 1
            self._read_events()
            try:
                recycled = self._recycle(request_id)
            except OSError:
                recycled = False
            if not recycled:
                self._make(request_id)
        return f"{self.response_root}/{request_id}"

    def wrote_files(self, request_id: str) -> bool:
        """Did the container put anything but the progress file in the folder?"""
        if request_id in self._wd and request_id not in self._dirty:
            return False  # watched, and no entry was created in it
        self.stats.scans += 1
        self.stats.on_path += 1
        return _has_files(f"{self.response_root}/{request_id}")

    def settled(self, request_id: str) -> None:
        """The container's answer was read to its end: only such a folder is recycled (after
        a cancel, a timeout or a broken connection the container may still be writing)."""
        self._settled.add(request_id)

    def wrote_beside(self, request_id: str) -> None:
        """A `<id>.response` or `<id>.zip` file was written next to the folder."""
        self._extra.add(request_id)

    # -- inotify ---------------------------------------------------------------------------

    def _read_events(self) -> None:
        if self._inotify is not None:
            self._inotify.read(self._created, self._overflow, self._gone)

    def _created(self, wd: int, name: str, written: bool) -> None:
        request_id = self._by_wd.get(wd)
        if request_id is not None:
            self._touched.add(request_id)
            if name != PROGRESS:
                self._dirty.add(request_id)
            elif written:
                listener = self._progress.get(request_id)
                if listener is not None:
                    listener()

    def on_progress(self, request_id: str, listener: Callable[[], object]) -> bool:
        """Call `listener` each time the container finishes writing (or renames in) the
        request's progress file; False when the folder is not watched (poll it instead)."""
        if request_id not in self._wd or self._inotify is None:
            return False
        self._progress[request_id] = listener
        return True

    def no_progress(self, request_id: str) -> None:
        self._progress.pop(request_id, None)

    def follows_progress(self, request_id: str) -> bool:
        """Its progress file is followed through inotify (see on_progress)."""
        return request_id in self._progress

    def _overflow(self) -> None:
        # events were lost: every watched folder must be looked at, and none is reused
        self._touched.update(self._wd)
        self._dirty.update(self._wd)

    def _gone(self, wd: int) -> None:
        request_id = self._by_wd.pop(wd, None)
        if request_id is not None and self._wd.get(request_id) == wd:
            # the folder went while still ours (removed by hand): look at it from now on
            del self._wd[request_id]
            self._touched.add(request_id)

    # -- the end of a request --------------------------------------------------------------

    def done(self, request_id: str, assets: bool = True) -> None:
        """The request is over. A watched folder nothing was created in is kept for a later
        request (no file-system call); anything else is removed on a worker thread.
        `assets=False` when no input assets were staged for it (an id whose accept failed
        comes here too, with `assets=True`: some may have been staged)."""
        made = request_id in self._made
        self._made.discard(request_id)
        settled = request_id in self._settled
        self._settled.discard(request_id)
        clean = (
            made
            and settled
            and request_id in self._wd
            and request_id not in self._touched
            and request_id not in self._extra
        )
        if clean:
            self._free.append(request_id)
            self._refill_soon()
            if assets:
                self._trash.append((request_id, False, True))
            return
        self._discard(request_id, assets)

    def _discard(self, request_id: str, assets: bool = False) -> None:
        """Forget the folder; it and what is beside it go with the next removal batch."""
        wd = self._wd.pop(request_id, None)
        if wd is not None:
            self._by_wd.pop(wd, None)
        self._touched.discard(request_id)
        self._dirty.discard(request_id)
        self._extra.discard(request_id)
        self._settled.discard(request_id)
        self._trash.append((request_id, True, assets))
        self.stats.removed += 1

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            await self.sweep()

    async def sweep(self) -> None:
        """Remove what finished requests left (their folders unless recycled, staged assets,
        files beside): one worker-thread hop per batch."""
        batch, self._trash = self._trash, []
        if batch:
            self.stats.sweeps += 1
            await asyncio.to_thread(_remove, self.response_root, self.assets_root, batch)


def _has_files(path: str) -> bool:
    try:
        with os.scandir(path) as entries:
            return any(e.name != PROGRESS for e in entries)
    except OSError:
        return False


def _remove(response_root: str, assets_root: str, batch: list[tuple[str, bool, bool]]) -> None:
    """On a worker thread: output folders that are not recycled, with whatever is beside
    them, and staged assets."""
    for request_id, folder, assets in batch:
        if assets:
            shutil.rmtree(f"{assets_root}/{request_id}", ignore_errors=True)
        if not folder:
            continue
        path = f"{response_root}/{request_id}"
        shutil.rmtree(path, ignore_errors=True)
        for leftover in (f"{path}.response", f"{path}.zip", f"{path}.zip.partial"):
            try:
                os.unlink(leftover)
            except FileNotFoundError:
                pass


def _remove_empty_dirs(root: str) -> None:
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            try:
                os.rmdir(entry.path)
            except OSError:
                pass  # not empty: it belongs to a request that will run again
