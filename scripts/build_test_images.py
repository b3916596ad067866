"""Builds the nvcf-lite test function images locally: no registry, no Dockerfile, no builder.

The base image is a FROM-scratch root filesystem holding the host's own CPython (the resolved
interpreter, its stdlib minus tests/GUI/packaging, the lib-dynload modules and every shared
library `ldd` finds for them), /etc/passwd with `nobody`, /tmp, scripts/function_server.py at
/app/function_server.py and scripts/fast_function_server.py at /app/fast_function_server.py. It
is sent to the daemon as a tar stream (`docker import`); the variants are the same root
filesystem committed with one more ENV, or another CMD (`nvcf-lite-test/fast` runs the
single-threaded asyncio server, the baseline of scripts/bench_invoke.py; `nvcf-lite-test/llm`
runs scripts/llm_function_server.py, a deterministic OpenAI-compatible server).
`nvcf-lite-test/grpc-echo` (scripts/grpc_echo_server.py) has a root filesystem of its own: the
base's plus this environment's grpcio under /app/site and the C++ runtime its extension links.
Each image carries
the label `nvcf-lite.test-image-hash`, a digest of its inputs, so a re-run skips up-to-date
images.

    .venv/bin/python scripts/build_test_images.py [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    import docker
    import docker.errors
except ImportError:
    sys.exit("error: the `docker` SDK is missing; run with the project venv: .venv/bin/python")

HERE = Path(__file__).resolve().parent
SERVER = HERE / "function_server.py"
FAST_SERVER = HERE / "fast_function_server.py"
GRPC_SERVER = HERE / "grpc_echo_server.py"
LLM_SERVER = HERE / "llm_function_server.py"
LABEL = "nvcf-lite.test-image-hash"
TAG = "1"
BASE = "nvcf-lite-test/echo"
VARIANTS: dict[str, dict[str, str]] = {
    BASE: {},
    "nvcf-lite-test/unhealthy": {"FAIL_HEALTH": "1"},
    "nvcf-lite-test/crash": {"CRASH_AFTER_S": "2"},
    "nvcf-lite-test/slow-ready": {"READY_DELAY_S": "3"},
    "nvcf-lite-test/exit": {"EXIT_AT_START": "1"},
    "nvcf-lite-test/fast": {},
    "nvcf-lite-test/llm": {},
}
# The gRPC echo function: its own root filesystem, the base's plus grpcio (copied from this
# environment's site-packages to /app/site, with the C++ runtime its extension links).
GRPC_IMAGE = "nvcf-lite-test/grpc-echo"
GRPC_COMMAND = "/app/grpc_echo_server.py"
GRPC_ENV = {"PYTHONPATH": "/app/site"}
# The server each image runs (the default: /app/function_server.py).
COMMANDS: dict[str, str] = {
    "nvcf-lite-test/fast": "/app/fast_function_server.py",
    "nvcf-lite-test/llm": "/app/llm_function_server.py",  # OpenAI-like (the gateway's tests)
}
DEFAULT_COMMAND = "/app/function_server.py"
# Stdlib parts no test function needs (and most of the size).
SKIP_DIRS = {
    "test",
    "tests",
    "idle_test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "distutils",
    "pydoc_data",
    "site-packages",
    "dist-packages",
}
SKIP_MODULES = re.compile(
    r"^(_test|_xx|xxlimited|_ctypes_test|_tkinter|_curses|readline|nis|ossaudiodev|_ssl|_hashlib)"
)
LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")
# For GPU containers: binaries the NVIDIA container toolkit mounts in (nvidia-smi) still link
# glibc's compatibility libraries (stubs since glibc 2.34, which this Python does not need), and
# the toolkit reads /etc/debian_version to mount the driver libraries into the multiarch
# directory this image's (Debian-built) loader searches; ld.so.conf lets its ldconfig index them.
GLIBC_COMPAT = ("libdl.so.2", "libpthread.so.0", "librt.so.1", "libutil.so.1")
DISTRO_FILES = ("/etc/debian_version", "/etc/ld.so.conf")


@dataclass(frozen=True)
class Interpreter:
    """Where the host's CPython lives: the files that make up the image's Python."""

    executable: Path  # resolved, never a symlink or a venv shim
    stdlib: Path
    dynload: Path

    @classmethod
    def host(cls) -> Interpreter:
        executable = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
        stdlib = Path(sysconfig.get_path("stdlib", vars={"installed_base": sys.base_prefix}))
        dynload = Path(sysconfig.get_config_var("DESTSHARED") or stdlib / "lib-dynload")
        if not dynload.is_dir():
            dynload = stdlib / "lib-dynload"
        return cls(executable, stdlib, dynload)

    def fingerprint(self) -> str:
        """A cheap digest of the interpreter install (paths, sizes, mtimes), not its bytes."""
        parts = [str(self.executable), str(self.stdlib), str(self.dynload), sys.version]
        for path in (self.executable, self.stdlib / "os.py", self.stdlib, self.dynload):
            st = path.stat()
            parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def inputs_hash(interp: Interpreter) -> str:
    """Digest of everything the base image is made of; variants add their env to it."""
    digest = hashlib.sha256()
    for path in (Path(__file__).resolve(), SERVER, FAST_SERVER, LLM_SERVER):
        digest.update(path.read_bytes())
    digest.update(interp.fingerprint().encode())
    return digest.hexdigest()


def variant_hash(base_hash: str, env: dict[str, str], command: str = DEFAULT_COMMAND) -> str:
    extra = "".join(f"{k}={v}\n" for k, v in sorted(env.items()))
    if command != DEFAULT_COMMAND:
        extra += f"CMD {command}\n"
    return hashlib.sha256(f"{base_hash}\n{extra}".encode()).hexdigest()


def shared_libraries(binaries: list[Path]) -> set[Path]:
    """Every shared library (and the dynamic loader) `ldd` resolves for these ELF files."""
    found: set[Path] = set()
    for binary in binaries:
        try:
            out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
        except FileNotFoundError:
            sys.exit("error: `ldd` is needed to find the interpreter's shared libraries")
        found.update(Path(m.group(1)) for m in map(LDD_LINE.search, out.splitlines()) if m)
    return found


def glibc_compat(libs: set[Path]) -> set[Path]:
    """glibc's compatibility libraries next to the libc.so.6 this Python links."""
    libc = next((lib for lib in libs if lib.name == "libc.so.6"), None)
    if libc is None:
        return set()
    return {libc.with_name(name) for name in GLIBC_COMPAT if libc.with_name(name).exists()}


def distro_files() -> list[Path]:
    """The host's /etc/debian_version and ld.so.conf (with ld.so.conf.d), where they exist."""
    found = [Path(name) for name in DISTRO_FILES if Path(name).is_file()]
    return found + sorted(Path("/etc/ld.so.conf.d").glob("*.conf"))


def stdlib_files(stdlib: Path, dynload: Path) -> Iterator[Path]:
    """Stdlib sources and their plain .pyc (no opt-1/opt-2), lib-dynload excluded."""
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = [
            d
            for d in dirs
            if d not in SKIP_DIRS and not d.startswith("config-") and Path(root, d) != dynload
        ]
        in_cache = Path(root).name == "__pycache__"
        for name in files:
            path = Path(root, name)
            if (not in_cache or (name.endswith(".pyc") and ".opt-" not in name)) and path.exists():
                yield path  # (a dangling symlink does not exist)


def dynload_modules(dynload: Path) -> list[Path]:
    return sorted(p for p in dynload.glob("*.so") if not SKIP_MODULES.match(p.name))


def strip_debug(files: list[Path], workdir: Path) -> dict[Path, Path]:
    """Copies of the given ELF files without debug info (pyenv's libpython: 23 MB -> ~5 MB).

    Returns {original: stripped copy}; empty when `strip` is not installed or fails.
    """
    strip = shutil.which("strip")
    if not strip:
        return {}
    copies = {f: workdir / f"{i}-{f.name}" for i, f in enumerate(files)}
    for src, dst in copies.items():
        shutil.copyfile(src, dst)
    done = subprocess.run([strip, "--strip-debug", *map(str, copies.values())], capture_output=True)
    return copies if done.returncode == 0 else {}


class RootfsTar:
    """An in-memory tar of a root filesystem, parents added before children."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs: set[str] = set()

    def _info(self, name: str, kind: bytes, mode: int, mtime: float = 0.0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name.lstrip("/"))
        info.type, info.mode, info.mtime = kind, mode, int(mtime)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        path = path.rstrip("/")
        if not path or path in self.dirs:
            return
        self.mkdir(os.path.dirname(path))
        self.dirs.add(path)
        self.tar.addfile(self._info(path, tarfile.DIRTYPE, mode))

    def add_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.mkdir(os.path.dirname(path))
        info = self._info(path, tarfile.REGTYPE, mode, time.time())
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def add_file(self, path: str, source: Path, mode: int | None = None) -> None:
        """Adds `source` (symlinks followed) at `path`, keeping its mtime for .pyc checks."""
        st = source.stat()
        self.mkdir(os.path.dirname(path))
        info = self._info(path, tarfile.REGTYPE, st.st_mode & 0o7777 if mode is None else mode)
        info.mtime, info.size = int(st.st_mtime), st.st_size
        with source.open("rb") as f:
            self.tar.addfile(info, f)

    def symlink(self, path: str, target: str) -> None:
        self.mkdir(os.path.dirname(path))
        info = self._info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)

    def close(self) -> bytes:
        self.tar.close()
        return self.buffer.getvalue()


def grpc_files() -> tuple[Path, list[Path]]:
    """The grpcio package of this environment: (its site-packages folder, its files)."""
    try:
        import grpc
        import typing_extensions
    except ImportError:
        sys.exit("error: grpcio is missing; run with the project venv: .venv/bin/python")
    package = Path(grpc.__file__).parent
    files = [p for p in sorted(package.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    return package.parent, [*files, Path(typing_extensions.__file__)]


def grpc_hash(base_hash: str) -> str:
    """Digest of the gRPC image's inputs: the base's, the echo server, grpcio's files."""
    digest = hashlib.sha256(base_hash.encode())
    digest.update(GRPC_SERVER.read_bytes())
    for path in grpc_files()[1]:
        st = path.stat()
        digest.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def build_rootfs(interp: Interpreter, with_grpc: bool = False) -> bytes:
    """The base image's root filesystem as tar bytes (with grpcio: the gRPC echo image's)."""
    modules = dynload_modules(interp.dynload)
    site, extra = grpc_files() if with_grpc else (Path("/"), [])
    extensions = [p for p in extra if p.suffix == ".so"]
    libs = shared_libraries([interp.executable, *modules, *extensions])
    libs |= glibc_compat(libs)
    rootfs = RootfsTar()
    with tempfile.TemporaryDirectory(prefix="nvcf-lite-rootfs-") as tmp:
        # System libraries are stripped already; the interpreter's own files may not be.
        own = [interp.executable, *modules]
        own += [lib for lib in libs if not str(lib).startswith(("/lib", "/usr/lib"))]
        stripped = strip_debug(own, Path(tmp))
        for src in [interp.executable, *modules, *sorted(libs)]:
            rootfs.add_file(str(src), stripped.get(src, src), mode=0o755)
        for path in stdlib_files(interp.stdlib, interp.dynload):
            rootfs.add_file(str(path), path, mode=0o644)
    rootfs.mkdir(str(interp.stdlib / "site-packages"))
    for name in {"python3", "python"} - {interp.executable.name}:
        rootfs.symlink(str(interp.executable.parent / name), interp.executable.name)
    rootfs.add_bytes(
        "/etc/passwd",
        b"root:x:0:0:root:/root:/sbin/nologin\n"
        b"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
    )
    rootfs.add_bytes("/etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    for path in distro_files():
        rootfs.add_file(str(path), path, mode=0o644)
    rootfs.mkdir("/tmp", 0o1777)
    rootfs.mkdir("/var/tmp", 0o1777)
    rootfs.add_file("/app/function_server.py", SERVER, mode=0o644)
    rootfs.add_file("/app/fast_function_server.py", FAST_SERVER, mode=0o644)
    for path in extra:
        rootfs.add_file(f"/app/site/{path.relative_to(site)}", path, mode=0o644)
    if with_grpc:
        rootfs.add_file(GRPC_COMMAND, GRPC_SERVER, mode=0o644)
    rootfs.add_file("/app/llm_function_server.py", LLM_SERVER, mode=0o644)
    return rootfs.close()


def image_changes(
    interp: Interpreter, env: dict[str, str], label: str, command: str = DEFAULT_COMMAND
) -> list[str]:
    """Dockerfile instructions applied on import/commit."""
    path = f"{interp.executable.parent}:/usr/local/bin:/usr/bin:/bin"
    base_env = {"PATH": path, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return [
        f'CMD ["python3","{command}"]',
        "EXPOSE 8000",
        "WORKDIR /app",
        *(f"ENV {k}={v}" for k, v in {**base_env, **env}.items()),
        f"LABEL {LABEL}={label}",
    ]


def current_label(client: docker.DockerClient, ref: str) -> tuple[str | None, str | None]:
    """(image id, content label) of `ref`, or (None, None) when absent."""
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None, None
    return image.id, (image.labels or {}).get(LABEL)


def derive(client: docker.DockerClient, base_ref: str, ref: str, changes: list[str]) -> str:
    """Commits the base image's filesystem under `ref` with extra ENV (no tar, no extraction)."""
    container = client.api.create_container(base_ref)
    try:
        repo, tag = ref.rsplit(":", 1)
        result = client.api.commit(container["Id"], repo, tag, pause=False, changes=changes)
        return str(result["Id"])
    finally:
        client.api.remove_container(container["Id"], force=True)


def build(client: docker.DockerClient, force: bool) -> list[str]:
    """Builds every image that is missing or stale; returns the refs it (re)built."""
    interp = Interpreter.host()
    base_hash = inputs_hash(interp)
    rebuilt: list[str] = []
    stale_ids: list[str] = []
    for repo, env in VARIANTS.items():
        ref, started = f"{repo}:{TAG}", time.perf_counter()
        command = COMMANDS.get(repo, DEFAULT_COMMAND)
        want = variant_hash(base_hash, env, command)
        old_id, have = current_label(client, ref)
        if have == want and not force:
            print(f"{ref:32} up to date ({time.perf_counter() - started:.3f} s)")
            continue
        changes = image_changes(interp, env, want, command)
        if repo == BASE:
            data = build_rootfs(interp)
            client.api.import_image_from_data(data, repository=repo, tag=TAG, changes=changes)
        else:
            derive(client, f"{BASE}:{TAG}", ref, changes)
        image = client.images.get(ref)
        size_mb = (image.attrs.get("Size") or 0) / 1e6
        took = time.perf_counter() - started
        print(f"{ref:32} built in {took:.2f} s ({image.short_id}, {size_mb:.1f} MB)")
        rebuilt.append(ref)
        if old_id and old_id != image.id:
            stale_ids.append(old_id)
    grpc_ref = build_grpc_image(client, interp, base_hash, force)
    if grpc_ref is not None:
        rebuilt.append(grpc_ref)
    for image_id in reversed(stale_ids):  # derived images first, then their old base
        try:
            client.images.remove(image_id, noprune=False)
        except docker.errors.APIError:
            pass  # still used by a container or a child image; harmless
    return rebuilt


def build_grpc_image(
    client: docker.DockerClient, interp: Interpreter, base_hash: str, force: bool
) -> str | None:
    """The gRPC echo image, when missing or stale: its ref, else None."""
    ref, started = f"{GRPC_IMAGE}:{TAG}", time.perf_counter()
    want = grpc_hash(base_hash)
    old_id, have = current_label(client, ref)
    if have == want and not force:
        print(f"{ref:32} up to date ({time.perf_counter() - started:.3f} s)")
        return None
    changes = image_changes(interp, GRPC_ENV, want, GRPC_COMMAND)
    changes.append("EXPOSE 8001")
    data = build_rootfs(interp, with_grpc=True)
    client.api.import_image_from_data(data, repository=GRPC_IMAGE, tag=TAG, changes=changes)
    image = client.images.get(ref)
    size_mb = (image.attrs.get("Size") or 0) / 1e6
    took = time.perf_counter() - started
    print(f"{ref:32} built in {took:.2f} s ({image.short_id}, {size_mb:.1f} MB)")
    if old_id and old_id != image.id:
        try:
            client.images.remove(old_id, noprune=False)
        except docker.errors.APIError:
            pass  # still used by a container; harmless
    return ref


def connect() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        sys.exit(
            f"error: the Docker daemon at {host} is unreachable ({exc}).\n"
            "Start one with: scripts/start-dockerd.sh"
        )
    return client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    client = connect()
    started = time.perf_counter()
    build(client, args.force)
    print(f"done in {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
