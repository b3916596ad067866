"""A three-node Docker Swarm on this machine, for tests: one manager and two workers, each a
dockerd of the test's own in a network namespace the test creates (the shared daemon at
/var/run/docker.sock is never touched). It needs root (CI runs as root).

Network: a hub namespace holds a bridge; each node's namespace has a veth on it with the
node's own address, and the root namespace (where nvcf-lite and the test run) has one too.
The addresses are loopback ones on a dedicated subnet, 127.77.N.0/24, so the tests' rule
"traffic only to 127.0.0.0/8" holds; Linux routes 127/8 off `lo` with `route_localnet=1` on
the interfaces and a /24 route in the `local` table that is more specific than lo's 127/8. The
bridge lives in its own namespace because the root namespace's FORWARD policy is DROP (the
shared dockerd's) and br_netfilter would apply it to bridged frames. Swarm's control plane
(2377) and gossip (7946) run over these addresses; tasks publish ports in host mode on their
node's address (no overlay or routing mesh is needed). Inside each node a MASQUERADE rule on
its docker0 stands in for the real machine's own address: without it a container would see a
127.x client address and answer its own loopback.

Each engine: its own socket, --data-root, --exec-root, --pidfile, bridge (inside its own
namespace), and `--node-generic-resource NVIDIA-GPU=<uuid>` for its simulated GPUs; the test
images are copied in from the shared daemon (docker save | load). `kill(node)` is a machine
failure: SIGKILL of everything the node runs and its link down. `close()` removes every
service, daemon, mount, namespace, link and route it made, also after a kill.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import pytest
from docker_support import (
    ECHO_IMAGE,
    EXIT_IMAGE,
    docker_client_or_skip,
    docker_required,
    engine_answering,
    ensure_test_images,
)
from report_support import report

GPU_NAME = "NVIDIA H100 80GB HBM3"  # what the nodes' labels say their GPUs are
GPU_MEMORY_MB = 81559


STALE = "/run/nvcf-swarm-test-"  # + the pid of the test process that made it


def sweep_stale() -> None:
    """What a test process killed mid-run left (its dockerds run in sessions of their own):
    each cluster whose process is gone is closed like any other."""
    for root in Path("/run").glob(Path(STALE).name + "*"):
        pid = root.name.rsplit("-", 1)[-1]
        names = root / "names"
        if not pid.isdigit() or _alive(int(pid)) or not names.is_file():
            continue
        tag, prefix = names.read_text().split()
        print(f"swarm: removing the cluster a killed test left in {root}")
        SwarmCluster(root, tag, prefix).close()


def _alive(pid: int) -> bool:
    """Running, not a zombie (where pid 1 reaps no orphans, a killed test stays one)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextmanager
def open_cluster() -> Iterator[SwarmCluster]:
    """The cluster with the echo and exit images; its timings print as `SWARM ...` lines."""
    docker_client_or_skip()
    if os.geteuid() != 0:
        if docker_required():
            pytest.fail("the swarm tests need root (network namespaces, dockerd)", pytrace=False)
        pytest.skip("the swarm tests need root (network namespaces, dockerd)")
    ensure_test_images()
    sweep_stale()
    cluster = SwarmCluster(Path(f"{STALE}{os.getpid()}"))
    try:
        cluster.up([ECHO_IMAGE, EXIT_IMAGE])
        yield cluster
    finally:
        cluster.close()
        for what, seconds in cluster.timings.items():
            report(f"SWARM {what}: {seconds:.2f} s")


def sh(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


class Node:
    def __init__(self, cluster: SwarmCluster, name: str, octet: int, gpus: list[str]) -> None:
        self.name, self.gpus = name, gpus
        self.ns = f"{cluster.tag}-{name}"
        self.address = f"{cluster.prefix}.{octet}"
        self.root = cluster.root / name
        self.url = f"unix://{self.root / 'd.sock'}"
        self.process: subprocess.Popen[bytes] | None = None
        self.client: docker.DockerClient | None = None
        self.killed = False

    def start(self, timeout_s: float = 60) -> None:
        (self.root / "pid").unlink(missing_ok=True)
        args = [
            "nsenter",
            f"--net=/run/netns/{self.ns}",
            "dockerd",
            f"--host={self.url}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'pid'}",
            f"--config-file={self.root / 'daemon.json'}",
        ]
        args += [f"--node-generic-resource=NVIDIA-GPU={g}" for g in self.gpus]
        with open(self.root / "dockerd.log", "ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        what = f"dockerd of {self.name}"
        self.client = engine_answering(self.process, self.url, timeout_s, what, self.log)

    def masquerade(self) -> None:
        sh("sysctl", "-qw", "net.ipv4.conf.docker0.route_localnet=1", ns=self.ns)
        rule = ["POSTROUTING", "-o", "docker0", "-s", f"{self.address}/24", "-j", "MASQUERADE"]
        sh("iptables", "-t", "nat", "-I", *rule, ns=self.ns)

    def own_pids(self) -> list[int]:
        """Every process of this node: those whose command line names its directory (dockerd,
        containerd, the shims) and their descendants (the containers)."""
        marker = str(self.root).encode()
        parents: dict[int, int] = {}
        found: set[int] = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            if marker in cmdline:
                found.add(int(entry))
        grew = True
        while grew:
            more = {p for p, parent in parents.items() if parent in found} - found
            found |= more
            grew = bool(more)
        found.discard(os.getpid())
        return sorted(found)

    def kill(self) -> None:
        """The machine fails: every process of it killed at once and its link down."""
        for pid in self.own_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process is not None:
            self.process.wait(timeout=10)
        self.process, self.client, self.killed = None, None, True
        sh("ip", "link", "set", "eth0", "down", ns=self.ns)
        (self.root / "exec" / "containerd" / "containerd.pid").unlink(missing_ok=True)

    def revive(self) -> None:
        """The machine is back: link up, dockerd started (it rejoins the swarm by itself)."""
        sh("ip", "link", "set", "eth0", "up", ns=self.ns)
        self.start()
        self.killed = False

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def log(self) -> str:
        try:
            return (self.root / "dockerd.log").read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"


class SwarmCluster:
    """manager (no GPUs, drained: it only manages), worker-1 and worker-2 (two GPUs each)."""

    def __init__(self, root: Path, tag: str = "", prefix: str = "") -> None:
        self.root = root
        self.tag = tag or f"nvsw{random.randrange(16**3):03x}"
        self.prefix = prefix or f"127.77.{random.randrange(1, 250)}"
        self.link = f"{self.tag}r"
        self.hub = f"{self.tag}-hub"
        self.manager = Node(self, "manager", 11, [])
        self.workers = [
            Node(self, f"worker-{i}", 11 + i, [f"GPU-{self.tag}-w{i}-{g}" for g in "ab"])
            for i in (1, 2)
        ]
        self.nodes = [self.manager, *self.workers]
        self.timings: dict[str, float] = {}

    @property
    def url(self) -> str:
        return self.manager.url

    def api(self) -> Any:
        assert self.manager.client is not None
        return self.manager.client.api

    def up(self, images: list[str]) -> None:
        t0 = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "names").write_text(f"{self.tag} {self.prefix}")  # for sweep_stale
        self._network()
        for node in self.nodes:
            node.root.mkdir(parents=True, exist_ok=True)
            (node.root / "daemon.json").write_text("{}")
            node.start()
            node.masquerade()
        self._form()
        self.timings["swarm formation"] = time.monotonic() - t0
        shared = docker.from_env()
        for image in images:
            data = b"".join(shared.images.get(image).save(named=image))
            for node in self.nodes:
                assert node.client is not None
                node.client.images.load(data)
        shared.close()

    def _network(self) -> None:
        sh("ip", "netns", "add", self.hub)
        sh("ip", "link", "add", "br0", "type", "bridge", ns=self.hub)
        sh("ip", "link", "set", "br0", "up", ns=self.hub)
        sh(
            "ip",
            "link",
            "add",
            self.link,
            "type",
            "veth",
            "peer",
            "name",
            "root",
            "netns",
            self.hub,
        )
        sh("ip", "link", "set", "root", "master", "br0", "up", ns=self.hub)
        sh("ip", "addr", "add", f"{self.prefix}.1/24", "dev", self.link)
        sh("ip", "link", "set", self.link, "up")
        sh("sysctl", "-qw", f"net.ipv4.conf.{self.link}.route_localnet=1")
        sh("ip", "route", "add", f"{self.prefix}.0/24", "dev", self.link, "table", "local",
           "src", f"{self.prefix}.1")  # fmt: skip
        for i, node in enumerate(self.nodes):
            port = f"p{i}"
            sh("ip", "netns", "add", node.ns)
            sh("ip", "link", "add", "eth0", "netns", node.ns, "type", "veth", "peer", "name",
               port, "netns", self.hub)  # fmt: skip
            sh("ip", "link", "set", port, "master", "br0", "up", ns=self.hub)
            sh("ip", "link", "set", "lo", "up", ns=node.ns)
            sh("ip", "addr", "add", f"{node.address}/24", "dev", "eth0", ns=node.ns)
            sh("ip", "link", "set", "eth0", "up", ns=node.ns)
            for conf in ("all", "eth0"):
                sh("sysctl", "-qw", f"net.ipv4.conf.{conf}.route_localnet=1", ns=node.ns)
            sh("ip", "route", "add", f"{self.prefix}.0/24", "dev", "eth0", "table", "local",
               "src", node.address, ns=node.ns)  # fmt: skip

    def _form(self) -> None:
        m = self.manager.client
        assert m is not None
        m.swarm.init(
            advertise_addr=self.manager.address,
            listen_addr=f"{self.manager.address}:2377",
            dispatcher_heartbeat_period=1_000_000_000,  # 1 s: a lost node is noticed in ~3 s
        )
        token = m.swarm.attrs["JoinTokens"]["Worker"]
        for w in self.workers:
            assert w.client is not None
            w.client.swarm.join(
                remote_addrs=[f"{self.manager.address}:2377"],
                join_token=token,
                advertise_addr=w.address,
                listen_addr=f"{w.address}:2377",
            )
        for node in m.nodes.list():
            addr = node.attrs["Status"]["Addr"]
            me = next(n for n in self.nodes if n.address == addr)
            spec = node.attrs["Spec"]
            spec["Labels"] = {"nvcf-lite.node-name": me.name}
            if me.gpus:
                spec["Labels"]["nvcf-lite.gpu-name"] = GPU_NAME
                spec["Labels"]["nvcf-lite.gpu-memory-mb"] = str(GPU_MEMORY_MB)
            if me is self.manager:
                spec["Availability"] = "drain"  # it manages; instances go on the workers
            node.update(spec)

    def node_of(self, address: str) -> Node:
        return next(n for n in self.nodes if n.address == address)

    def services(self, namespace: str) -> list[Any]:
        api = self.api()
        found = api.services(filters={"label": f"nvcf-lite.namespace={namespace}"})
        return list(found)

    def close(self) -> None:
        """Everything it made goes, whatever state the test left it in."""
        if self.manager.client is not None:
            try:
                for s in self.api().services():
                    self.api().remove_service(s["ID"])
            except Exception as exc:
                print(f"swarm: removing services failed: {exc}")
        for node in self.nodes:
            if node.killed:  # started again to remove its containers and mounts cleanly
                sh("ip", "link", "set", "eth0", "up", ns=node.ns, check=False)
                try:
                    node.start(timeout_s=30)
                except RuntimeError as exc:
                    print(exc)
            if node.client is not None:
                try:
                    for c in node.client.containers.list(all=True):
                        c.remove(force=True)
                    node.client.swarm.leave(force=True)
                except Exception as exc:
                    print(f"swarm {node.name}: cleanup failed: {exc}")
            node.stop()
            for pid in node.own_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._unmount()
        for node in self.nodes:
            sh("ip", "netns", "del", node.ns, check=False)
        sh("ip", "netns", "del", self.hub, check=False)
        sh("ip", "link", "del", self.link, check=False)  # its route goes with it
        shutil.rmtree(self.root, ignore_errors=True)

    def _unmount(self) -> None:
        marker = str(self.root)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for target in sorted((m for m in mounts if m.startswith(marker)), reverse=True):
            sh("umount", "-l", target, check=False)
