"""Linux inotify through ctypes: which watched folders had an entry created in them.

The request folders (workers/request_folders.py) use it to know, without a system call per
request, whether a container wrote anything into a request's large-output folder (NVCF's own
worker watches these folders with inotify too, spec §4.5). A kernel or a sandbox without
inotify (or out of watches) gives `None` / `-1`, and callers look at the folder instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import struct
from collections.abc import Callable

log = logging.getLogger("nvcf_lite.runtime")

IN_CLOSE_WRITE = 0x00000008
IN_CREATE = 0x00000100
IN_MOVED_TO = 0x00000080
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of NUL-padded name)

Created = Callable[[int, str, bool], None]
"""(watch descriptor, entry name, written) for each entry created or moved into a watched
folder (written=False), and each file written and closed, or moved in, there (written=True)."""


def _libc() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        return lib
    except (OSError, AttributeError):
        return None


class Inotify:
    """One inotify instance watching folders for created entries (IN_CREATE, IN_MOVED_TO) and
    files written in them (IN_CLOSE_WRITE).

    `add` may be called from any thread (a batch of folders is made and watched on a worker
    thread); events are read on the event loop (`attach`), many per read.
    """

    def __init__(self, fd: int, lib: ctypes.CDLL) -> None:
        self.fd = fd
        self._lib = lib
        self._full = False

    @classmethod
    def open(cls) -> Inotify | None:
        lib = _libc()
        if lib is None:
            return None
        fd = lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            log.info("no inotify (%s): request folders are checked by reading them", _err())
            return None
        return cls(fd, lib)

    def add(self, path: str) -> int:
        """Watch the folder `path`; its watch descriptor, or -1 (out of watches, gone)."""
        wd = int(self._lib.inotify_add_watch(self.fd, os.fsencode(path), _MASK))
        if wd < 0 and ctypes.get_errno() == errno.ENOSPC and not self._full:
            self._full = True  # said once: fs.inotify.max_user_watches is reached
            log.warning("out of inotify watches: request folders are checked by reading them")
        return wd

    def read(
        self, created: Created, overflow: Callable[[], None], gone: Callable[[int], None]
    ) -> None:
        """Hand every pending event over (non-blocking; nothing pending is fine)."""
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return
            except OSError:
                return
            if not data:
                return
            offset, end = 0, len(data)
            while offset < end:
                wd, mask, _, size = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size
                if mask & IN_Q_OVERFLOW:
                    overflow()
                elif mask & IN_IGNORED:
                    gone(wd)
                else:
                    name = data[offset : offset + size].rstrip(b"\0")
                    written = bool(mask & (IN_CLOSE_WRITE | IN_MOVED_TO))
                    created(wd, name.decode("utf-8", "surrogateescape"), written)
                offset += size

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


_MASK = IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_ONLYDIR


def _err() -> str:
    return os.strerror(ctypes.get_errno())
