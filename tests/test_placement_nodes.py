"""Placement across the nodes of a swarm (pure): an instance's GPUs are on one node, no GPU
goes to two instances across nodes, a node that is down or drained takes none; and how a
Swarm task's state reads as a container's (runtime/swarm_calls.py), node loss named."""

from __future__ import annotations

from pathlib import Path

from conftest import make_config

from nvcf_lite.domain.placement import GpuUnit, Host
from nvcf_lite.inventory import build_host
from nvcf_lite.runtime.machine import MachineTotals
from nvcf_lite.runtime.nvml import Gpu, GpuInventory
from nvcf_lite.runtime.swarm_calls import SwarmNode, info


def unit(uuid: str, node: str, index: int) -> GpuUnit:
    return GpuUnit(unit_id=uuid, gpu="H100", index=index, memory_mb=81559, node=node)


def two_nodes() -> Host:
    # a: three GPUs, b: two; indexes interleaved so "lowest first" alone would mix nodes
    units = [unit("a0", "a", 0), unit("b0", "b", 1), unit("a1", "a", 2), unit("b1", "b", 3)]
    return Host([*units, unit("a2", "a", 4)])


def test_instance_types_stop_at_the_most_gpus_one_node_has() -> None:
    host = two_nodes()
    assert host.count("H100") == 3
    assert host.instance_types("H100") == ["H100.GPU.1x", "H100.GPU.2x", "H100.GPU.3x"]
    assert host.nodes() == ["a", "b"]


def test_an_instance_gets_units_of_one_node_and_none_twice() -> None:
    host = two_nodes()
    used: set[str] = set()
    placed = []
    for _ in range(2):
        got = host.place("H100", 2, used)
        assert got is not None and len({u.node for u in got}) == 1
        used |= {u.unit_id for u in got}
        placed.append(got)
    assert [[u.unit_id for u in p] for p in placed] == [["a0", "a1"], ["b0", "b1"]]
    assert host.place("H100", 2, used) is None  # a2 is alone on a: no 2x fits any more
    assert [u.unit_id for u in host.place("H100", 1, used) or []] == ["a2"]


def test_units_of_an_unavailable_node_are_not_placed() -> None:
    host = two_nodes()
    host.unavailable = {"a0", "a1", "a2"}
    got = host.place("H100", 1, set())
    assert got is not None and got[0].node == "b"
    assert host.place("H100", 3, set()) is None


def test_the_inventory_keeps_each_gpus_node(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    gpus = [
        Gpu(index=0, uuid="GPU-1", name="NVIDIA H100 80GB HBM3", memory_mb=81559, node="w1"),
        Gpu(index=1, uuid="GPU-2", name="NVIDIA H100 80GB HBM3", memory_mb=81559, node="w2"),
    ]
    host = build_host(
        config,
        GpuInventory(gpus=gpus, nodes=["m", "w1", "w2"]),
        MachineTotals(2, 4096, "test", "test"),
    )
    assert [(u.unit_id, u.node, u.gpu) for u in host.units] == [
        ("GPU-1", "w1", "H100"),
        ("GPU-2", "w2", "H100"),
    ]
    assert host.instance_types("H100") == ["H100.GPU.1x"]


def node(state: str = "ready", availability: str = "active") -> SwarmNode:
    return SwarmNode(
        id="n1", name="worker-1", address="127.77.0.12", state=state,
        availability=availability, role="worker", gpus=["GPU-1"], labels={},
    )  # fmt: skip


def task(state: str, err: str = "", exit_code: int = 0) -> dict[str, object]:
    return {
        "NodeID": "n1",
        "DesiredState": "running",
        "Status": {
            "State": state,
            "Err": err,
            "ContainerStatus": {"ExitCode": exit_code},
            "PortStatus": {"Ports": [{"TargetPort": 8000, "PublishedPort": 30001}]},
        },
    }


SERVICE = {"ID": "s1", "Spec": {"Name": "x", "Labels": {"nvcf-lite.managed": "true"}}}


def test_a_running_task_is_reached_at_its_nodes_address() -> None:
    c = info(SERVICE, task("running"), {"n1": node()}, full=False)
    assert (c.state, c.address, c.node, c.host_ports) == (
        "running",
        "127.77.0.12",
        "worker-1",
        {8000: 30001},
    )


def test_a_task_on_a_node_that_is_down_or_drained_is_dead_and_names_it() -> None:
    for state in ("running", "orphaned", "rejected"):
        c = info(
            SERVICE,
            task(state, "assigned node no longer meets constraints"),
            {"n1": node("down")},
            full=False,
        )
        assert c.state == "dead" and c.error is not None
        assert c.error.startswith("node worker-1 (127.77.0.12) is down: lost")
    c = info(SERVICE, task("running"), {"n1": node(availability="drain")}, full=False)
    assert (c.state, c.error) == ("dead", "node worker-1 (127.77.0.12) is drained")


def test_task_states_read_as_container_states() -> None:
    nodes = {"n1": node()}
    assert info(SERVICE, task("preparing"), nodes, full=False).state == "created"
    failed = info(SERVICE, task("failed", "task: non-zero exit (1)", 1), nodes, full=False)
    assert (failed.state, failed.exit_code) == ("exited", 1)
    assert info(SERVICE, None, nodes, full=False).state == "created"  # no task yet
    assert info(SERVICE, task("rejected", "No such image: x"), nodes, full=False).state == "dead"
