"""nvcf-lite in a container refuses a data_dir that is not the host's folder at the same path.

The decision is a pure function of `docker inspect`'s Mounts; finding the container's id reads
/proc/self/mountinfo and /proc/self/cgroup (here: files under a fake root). The Docker tests
inspect real containers made with each kind of `-v`; scripts/test-docker-image.sh runs the
image itself with and without the mount.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pynvml
import pytest

from nvcf_lite.runtime import nvml, own_container
from nvcf_lite.runtime.own_container import Mount, container_ids, data_mount_problem, mount_problem

CID = "b43075c3204710dd2157206e7a2a671fd697da857c962b8104ed8e41a58f0bd2"
DATA = PurePosixPath("/var/lib/nvcf-lite")
ANON = "3f" * 32
# A container's mount table as Docker 20.10 makes it (with --network host too).
CONTAINER_MOUNTINFO = f"""\
77 52 0:40 / / rw,relatime master:2 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X
94 77 254:0 /var/lib/nvcf-lite /var/lib/nvcf-lite rw,relatime - ext4 /dev/vda rw
95 77 254:0 /var/lib/docker/containers/{CID}/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda rw
96 77 254:0 /var/lib/docker/containers/{CID}/hostname /etc/hostname rw - ext4 /dev/vda rw
97 77 254:0 /var/lib/docker/containers/{CID}/hosts /etc/hosts rw - ext4 /dev/vda rw
"""
LAYER = "50522cda648978ff4a9c349f0146b5aa4c88ca6cc170483127b1fd996a826736"
HOST_MOUNTINFO = f"""\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
120 27 0:50 / /var/lib/docker/overlay2/{LAYER}/merged rw - overlay overlay rw
"""
HOST_CGROUP = "4:memory:/process_api/fc17ad208ff6b579521ed28153d79171\n0::/\n"


NO_GPUS_ALL = "no NVIDIA driver in this container (start it with `docker run --gpus all`"


def bind(source: str, destination: str | None = None, rw: bool = True) -> Mount:
    return Mount("bind", source, destination or source, rw)


# -- which container am I in ------------------------------------------------------------------


def test_the_container_id_comes_from_the_mount_table() -> None:
    assert container_ids(CONTAINER_MOUNTINFO, "0::/\n") == [CID]


@pytest.mark.parametrize(
    "cgroup",
    [
        f"12:memory:/docker/{CID}\n0::/docker/{CID}\n",  # cgroup v1 / v2 with cgroupfs driver
        f"0::/system.slice/docker-{CID}.scope\n",  # cgroup v2 with the systemd driver
    ],
)
def test_or_from_the_cgroup_path(cgroup: str) -> None:
    assert container_ids(HOST_MOUNTINFO, cgroup) == [CID]


def test_a_host_is_in_no_container() -> None:
    assert container_ids(HOST_MOUNTINFO, HOST_CGROUP) == []


def _fake_root(tmp_path: Path, mountinfo: str, cgroup: str = "0::/\n") -> Path:
    proc = tmp_path / "root" / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "mountinfo").write_text(mountinfo)
    (proc / "cgroup").write_text(cgroup)
    return tmp_path / "root"


def test_outside_a_container_nothing_is_asked(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, HOST_MOUNTINFO, HOST_CGROUP)
    (root / ".dockerenv").touch()  # build machines that are containers have one and no id
    # An engine URL that would fail if it were used.
    assert data_mount_problem(Path(DATA), "tcp://127.0.0.1:9", root=root) is None


def test_an_unreachable_engine_is_not_a_refusal(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, CONTAINER_MOUNTINFO)
    assert data_mount_problem(Path(DATA), "unix:///nonexistent/docker.sock", root=root) is None


def test_in_container_reads_the_same_files(tmp_path: Path) -> None:
    assert own_container.in_container(_fake_root(tmp_path / "c", CONTAINER_MOUNTINFO))
    assert not own_container.in_container(_fake_root(tmp_path / "h", HOST_MOUNTINFO, HOST_CGROUP))


def test_without_gpus_all_the_nvml_message_says_how_to_get_them() -> None:
    no_library = pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    inside = nvml._unavailable(no_library, in_container=True)
    assert NO_GPUS_ALL in inside
    assert inside.endswith(nvml.NO_GPU_ADVICE)
    assert "no NVIDIA driver on this host" in nvml._unavailable(no_library, in_container=False)
    # Other causes are the same inside and out: --gpus all would not help with them.
    not_loaded = pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    assert "--gpus" not in nvml._unavailable(not_loaded, in_container=True)
    if "Library Not Found" in (nvml.read_inventory().error or ""):  # as here: no driver at all
        assert NO_GPUS_ALL in (nvml.read_inventory(in_container=True).error or "")


# -- the decision -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mounts",
    [
        [bind("/var/run/docker.sock"), bind(str(DATA))],
        [bind("/var/lib")],  # a parent folder at the same path holds it too
        [bind(str(DATA)), bind(f"{DATA}/blobs")],  # and a same-path bind inside it
    ],
)
def test_the_host_folder_at_the_same_path_is_accepted(mounts: list[Mount]) -> None:
    assert mount_problem(DATA, mounts) is None


FIX = f"-v {DATA}:{DATA} -e NVCF_LITE_STORE__DATA_DIR={DATA}"


@pytest.mark.parametrize(
    ("mounts", "fault", "fix"),
    [
        ([bind("/var/run/docker.sock")], "is not mounted from the host", FIX),
        ([Mount("volume", f"/var/lib/docker/volumes/{ANON}/_data", str(DATA), True, ANON)],
         "is an anonymous Docker volume", FIX),
        ([Mount("volume", "/var/lib/docker/volumes/nvdata/_data", str(DATA), True, "nvdata")],
         "is the named (nvdata) Docker volume", FIX),
        ([bind("/srv/nvcf", str(DATA))],
         f"is the host's /srv/nvcf mounted at {DATA}, not the same path",
         "-v /srv/nvcf:/srv/nvcf -e NVCF_LITE_STORE__DATA_DIR=/srv/nvcf"),
        ([bind("/srv", "/var/lib")], "is the host's /srv mounted at /var/lib",
         "-v /srv/nvcf-lite:/srv/nvcf-lite -e NVCF_LITE_STORE__DATA_DIR=/srv/nvcf-lite"),
        ([bind(str(DATA), rw=False)], "is mounted read-only", FIX),
        ([Mount("tmpfs", "", str(DATA))], "is a tmpfs mount", FIX),
    ],
)  # fmt: skip
def test_anything_else_is_refused_with_the_flags_that_fix_it(
    mounts: list[Mount], fault: str, fix: str
) -> None:
    message = mount_problem(DATA, mounts)
    assert message is not None
    assert f"the data directory {DATA} {fault}" in message
    assert fix in message
    assert "/var/inf" in message


def test_a_volume_inside_the_data_directory_is_refused_too() -> None:
    inner = Mount("volume", f"/var/lib/docker/volumes/{ANON}/_data", f"{DATA}/inf", True, ANON)
    message = mount_problem(DATA, [bind(str(DATA)), inner])
    assert message is not None
    assert f"{DATA}/inf, inside the data directory, is an anonymous Docker volume" in message
    assert "the data directory /var/lib/nvcf-lite is" not in message


def test_mounts_are_read_from_docker_inspect() -> None:
    doc = {"Type": "volume", "Name": ANON, "Source": "/x", "Destination": "/d", "RW": False}
    assert Mount.from_inspect(doc) == Mount("volume", "/x", "/d", False, ANON)


# -- against real containers ---------------------------------------------------------------------


@pytest.fixture
def made(dock: Any) -> Iterator[list[str]]:
    ids: list[str] = []
    yield ids
    for cid in ids:
        dock.api.remove_container(cid, force=True, v=True)


@pytest.mark.docker
def test_a_real_container_is_inspected(dock: Any, made: list[str], tmp_path: Path) -> None:
    from docker_support import ECHO_IMAGE, TEST_LABEL

    data = tmp_path / "data"
    data.mkdir()

    def created(binds: list[str]) -> str:
        """A container (never started) with these `-v` values, as `docker create` makes it."""
        volumes = [b.split(":")[1] if ":" in b else b for b in binds]
        host_config = dock.api.create_host_config(binds=[b for b in binds if ":" in b])
        cid = dock.api.create_container(
            ECHO_IMAGE, volumes=volumes, host_config=host_config, labels={TEST_LABEL: "own"}
        )["Id"]
        made.append(cid)
        return str(cid)

    def verdict(cid: str) -> str | None:
        root = tmp_path / cid
        proc = root / "proc" / "self"
        proc.mkdir(parents=True)
        (proc / "mountinfo").write_text(CONTAINER_MOUNTINFO.replace(CID, cid))
        (proc / "cgroup").write_text("0::/\n")
        return data_mount_problem(data, None, root=root)

    assert verdict(created([f"{data}:{data}"])) is None
    message = verdict(created([f"{tmp_path}:{data}"]))
    assert message and f"is the host's {tmp_path} mounted at {data}, not the same" in message
    assert f"-v {tmp_path}:{tmp_path} -e NVCF_LITE_STORE__DATA_DIR={tmp_path}" in message
    message = verdict(created([str(data)]))  # the old Dockerfile's VOLUME line did this
    assert message and f"the data directory {data} is an anonymous Docker volume" in message
    assert f"-v {data}:{data} -e NVCF_LITE_STORE__DATA_DIR={data}" in message
    message = verdict(created([f"nvcf-lite-test-own:{data}"]))
    dock.api.remove_container(made.pop(), force=True)
    dock.api.remove_volume("nvcf-lite-test-own")
    assert message and "is the named (nvcf-lite-test-own) Docker volume" in message


SECRETS = PurePosixPath("/run/nvcf-lite/secrets")


def test_the_secrets_folder_must_be_the_hosts_at_the_same_path() -> None:
    """Function containers mount <secrets_dir>/<instance> from the host at /var/secrets."""
    ok = [bind(str(DATA)), bind("/run/nvcf-lite")]
    assert mount_problem(DATA, ok, SECRETS) is None
    message = mount_problem(DATA, [bind(str(DATA))], SECRETS)
    assert message is not None
    assert f"the secrets folder {SECRETS} (docker.secrets_dir) is not mounted" in message
    assert "-v /run/nvcf-lite:/run/nvcf-lite" in message
    # a container's own tmpfs is not the host's memory: the engine would look on the host
    tmpfs = mount_problem(DATA, [bind(str(DATA)), Mount("tmpfs", "", "/run/nvcf-lite")], SECRETS)
    assert tmpfs is not None and "is a tmpfs mount" in tmpfs
    # the data directory's fault is said first, alone
    both = mount_problem(DATA, [], SECRETS)
    assert both is not None and "the data directory" in both and "secrets folder" not in both
