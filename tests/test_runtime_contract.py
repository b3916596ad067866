"""The fake runtime of the scheduler unit tests is held to what the Docker runtime does, and
the Swarm runtime to the same: the same assertions run on all three (labels, published ports
where `address` says, exits, missing images, listing, pause/unpause, idempotent removal, pull
progress while an image is pulled, pulls from a registry that wants credentials). One
difference is asserted as such: a Swarm service cannot be paused, and says so."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import docker
import msgspec
import pytest
from docker_support import ECHO_IMAGE, docker_client_or_skip
from fake_runtime import PRIVATE_AUTH
from registry_support import TestRegistry
from runtime_support import LABEL, Kind, healthy, spec

from nvcf_lite.runtime.base import (
    LABEL_INSTANCE_ID,
    LABEL_MANAGED,
    ImageNotFound,
    PullProgress,
    PullRefused,
    RegistryAuth,
    RuntimeFailure,
)


async def test_started_container_is_labelled_listed_and_answers(kind: Kind) -> None:
    info = await kind.runtime.create_and_start(spec(kind, "echo", "a"))
    assert info.state == "running"
    assert info.labels[LABEL_MANAGED] == "true" and info.labels[LABEL_INSTANCE_ID] == "a"
    assert await healthy(info.host_ports[8000], info.address)
    listed = [c for c in await kind.runtime.list_managed() if c.id == info.id]
    assert len(listed) == 1 and listed[0].labels[LABEL] == kind.images["run"]
    again = await kind.runtime.inspect(info.id)
    assert again is not None and again.host_ports == info.host_ports


async def test_limits_are_given_and_read_back_by_inspect_not_by_listing(kind: Kind) -> None:
    mib = 1024 * 1024
    limited = msgspec.structs.replace(
        spec(kind, "echo", "limits"),
        nano_cpus=250_000_000,
        memory_bytes=96 * mib,
        shm_bytes=32 * mib,
    )
    info = await kind.runtime.create_and_start(limited)
    assert (info.nano_cpus, info.memory_bytes, info.shm_bytes) == (250_000_000, 96 * mib, 32 * mib)
    plain = await kind.runtime.create_and_start(spec(kind, "echo", "no-limits"))
    assert (plain.nano_cpus, plain.memory_bytes) == (None, None)
    assert plain.shm_bytes == 64 * mib  # the engine's default /dev/shm
    listed = [c for c in await kind.runtime.list_managed() if c.id == info.id]
    assert [(c.nano_cpus, c.memory_bytes, c.shm_bytes) for c in listed] == [(None, None, None)]


async def test_exiting_container_reports_its_exit_code(kind: Kind) -> None:
    info = await kind.runtime.create_and_start(spec(kind, "exit", "b"))
    for _ in range(100):
        state: Any = await kind.runtime.inspect(info.id)
        if state is not None and state.state == "exited":
            break
        await asyncio.sleep(0.05)
    assert state.state == "exited" and state.exit_code == 1


async def test_missing_image_is_image_not_found(kind: Kind) -> None:
    with pytest.raises(ImageNotFound):
        await kind.runtime.create_and_start(spec(kind, "missing", "c"))
    assert not [
        c for c in await kind.runtime.list_managed() if c.labels.get(LABEL) == kind.images["run"]
    ]


async def test_pause_unpause_and_idempotent_removal(kind: Kind) -> None:
    info = await kind.runtime.create_and_start(spec(kind, "echo", "d"))
    if kind.name == "swarm":  # no pause for a service: a reason naming the setting to change
        with pytest.raises(RuntimeFailure, match=r"cannot be paused.*warm_pool_s"):
            await kind.runtime.pause(info.id)
    else:
        await kind.runtime.pause(info.id)
        paused = await kind.runtime.inspect(info.id)
        assert paused is not None and paused.state == "paused"
        await kind.runtime.unpause(info.id)
    running = await kind.runtime.inspect(info.id)
    assert running is not None and running.state == "running"
    await kind.runtime.remove(info.id, stop_timeout_s=1)
    await kind.runtime.remove(info.id, stop_timeout_s=1)  # gone already: fine
    assert await kind.runtime.inspect(info.id) is None


async def test_duplicate_names_are_refused(kind: Kind) -> None:
    await kind.runtime.create_and_start(spec(kind, "echo", "e"))
    with pytest.raises(Exception, match="already"):
        await kind.runtime.create_and_start(spec(kind, "echo", "e"))


def engine_of(k: Kind) -> tuple[docker.DockerClient, str]:
    """The engine that pulls, and the address on which it reaches a registry of the test's:
    a swarm's manager pulls from its own namespace, which reaches the root one's veth."""
    if k.cluster is None:
        return docker_client_or_skip(), "127.0.0.1"
    assert k.cluster.manager.client is not None
    return k.cluster.manager.client, f"{k.cluster.prefix}.1"


@contextmanager
def pullable(k: Kind) -> Iterator[str]:
    """An image the engine does not have and can pull in about 1.5 s."""
    if k.name == "fake":
        yield f"fake/pull-{k.images['run']}"
        return
    client, host = engine_of(k)
    with TestRegistry(client, ECHO_IMAGE, rate_bytes_s=10_000_000, host=host) as registry:
        yield registry.image


async def test_a_pull_reports_layer_and_byte_progress_while_it_runs(kind: Kind) -> None:
    with pullable(kind) as image:
        assert not await kind.runtime.image_exists(image)
        assert kind.runtime.pull_progress(image) is None
        pulling = asyncio.create_task(kind.runtime.ensure_image(image))
        seen: list[PullProgress] = []
        while not pulling.done():
            progress = kind.runtime.pull_progress(image)
            if progress is not None:
                seen.append(progress)
            await asyncio.sleep(0.02)
        assert await pulling is True
        assert kind.runtime.pull_progress(image) is None
        assert await kind.runtime.image_exists(image)
        assert await kind.runtime.ensure_image(image) is False
    assert len(seen) >= 3 and all(p.image == image for p in seen)
    assert seen[-1].layers_total == 2 and seen[-1].bytes_total > 0
    done = [p.bytes_done for p in seen]
    assert done == sorted(done) and done[0] < done[-1] <= seen[-1].bytes_total
    assert 0 < len({p.bytes_done for p in seen if p.bytes_done < p.bytes_total})


@contextmanager
def private(k: Kind) -> Iterator[tuple[str, RegistryAuth]]:
    """An image whose registry wants a username and password, and the right ones."""
    if k.name == "fake":
        yield f"fake/pull-private-{k.images['run']}", PRIVATE_AUTH
        return
    basic = ("puller", "right-password")
    client, address = engine_of(k)
    with TestRegistry(client, ECHO_IMAGE, basic_auth=basic, host=address) as registry:
        host = f"{address}:{registry.port}"
        yield registry.image, RegistryAuth(registry=host, username=basic[0], password=basic[1])


async def test_a_registry_that_wants_credentials_refuses_a_pull_without_the_right_ones(
    kind: Kind,
) -> None:
    with private(kind) as (image, auth):
        with pytest.raises(PullRefused) as refused:
            await kind.runtime.ensure_image(image)
        assert refused.value.auth is None and refused.value.image == image
        wrong = RegistryAuth(registry=auth.registry, username=auth.username, password="wrong")
        with pytest.raises(PullRefused) as rejected:
            await kind.runtime.ensure_image(image, wrong)
        assert rejected.value.auth == wrong
        assert "wrong" not in str(rejected.value)  # the password is never in the reason
        assert not await kind.runtime.image_exists(image)
        assert await kind.runtime.ensure_image(image, auth) is True
        assert await kind.runtime.image_exists(image)
