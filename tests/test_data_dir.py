"""The data_dir lock when root (`sudo nvcf-lite restore|migrate`) works in a service user's
data_dir: the service must still be able to take the lock afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nvcf_lite.store.data_dir import LOCK_FILE, DataDirBusy, DataDirLock

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
_TAKE = """
import sys
from pathlib import Path
from nvcf_lite.store.data_dir import DataDirLock
with DataDirLock(Path(sys.argv[1])):
    print("locked", flush=True)
"""


def test_root_hands_the_lock_file_it_creates_to_the_data_dirs_owner(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    os.chown(data_dir, 65534, 65534)
    with DataDirLock(data_dir):
        st = (data_dir / LOCK_FILE).stat()
        assert (st.st_uid, st.st_gid) == (65534, 65534)
        assert (data_dir / LOCK_FILE).read_text() == f"{os.getpid()}\n"


def test_a_lock_file_the_user_cannot_write_still_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Left root-owned 0644 by an older root run: flock through a read-only descriptor."""
    (tmp_path / LOCK_FILE).write_text("")
    real = os.open

    def no_write(path: object, flags: int, *args: int) -> int:
        if flags & os.O_RDWR:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, flags, *args)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(os, "open", no_write)
    with DataDirLock(tmp_path):
        monkeypatch.undo()
        with pytest.raises(DataDirBusy, match="is in use by another process"):
            DataDirLock(tmp_path).acquire()  # held, though no pid could be written
    DataDirLock(tmp_path).acquire()


def test_a_service_user_locks_a_lock_file_root_left_behind() -> None:
    if os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists():
        pytest.skip("needs root and setpriv")
    data_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"nvcf-lite-lock-{os.getpid()}"
    data_dir.mkdir(mode=0o755)
    try:
        (data_dir / LOCK_FILE).write_text("1\n")  # root's, 0644: not writable by the user
        os.chown(data_dir, 65534, 65534)
        done = subprocess.run(
            [*NOBODY, sys.executable, "-c", _TAKE, str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert done.returncode == 0 and done.stdout == "locked\n", done.stderr
    finally:
        for entry in data_dir.iterdir():
            entry.unlink()
        data_dir.rmdir()
