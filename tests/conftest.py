"""Shared fixtures: a config on a tmp data_dir, the app under a test client, a database file, keys,
Docker, the scheduler bench, the runtimes of the runtime contract."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from litestar.testing import TestClient

from nvcf_lite.app import RuntimeFactory, create_app
from nvcf_lite.config import Config, load_config
from nvcf_lite.models import SCOPES
from nvcf_lite.store.sqlite import Database

if TYPE_CHECKING:
    from runtime_support import Kind
    from scheduler_support import SchedulerBench
    from swarm_support import SwarmCluster

ADMIN_KEY = "nvapi-" + "A" * 60 + "test"


def make_config(data_dir: Path, **env: str) -> Config:
    environ = {
        "NVCF_LITE_STORE__DATA_DIR": str(data_dir),
        # beside data_dir, not in it (its default is memory-backed /run/nvcf-lite as root)
        "NVCF_LITE_DOCKER__SECRETS_DIR": str(data_dir.with_name(data_dir.name + "-secrets")),
        "NVCF_LITE_AUTH__BOOTSTRAP_KEY": ADMIN_KEY,
        "NVCF_LITE_AUTH__KEY_CACHE_SECONDS": "0",
        **env,
    }
    return load_config(None, environ)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path / "data")


@pytest.fixture
def app_factory(tmp_path: Path) -> Iterator[Callable[..., TestClient[Any]]]:
    """Start an app (more than once, over the same data_dir, to test restarts)."""
    clients: list[TestClient[Any]] = []

    def start(
        config: Config | None = None, runtime_factory: RuntimeFactory | None = None
    ) -> TestClient[Any]:
        app = create_app(config or make_config(tmp_path / "data"), runtime_factory=runtime_factory)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(app_factory: Callable[..., TestClient[Any]]) -> TestClient[Any]:
    return app_factory()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A real database file (migrated), closed after the test."""
    database = await Database.open(tmp_path / "nvcf-lite.db")
    yield database
    await database.close()


@pytest.fixture
def dock() -> Any:
    """A Docker client with the test images built (skips, or fails in CI, without Docker)."""
    from docker_support import docker_client_or_skip, ensure_test_images

    client = docker_client_or_skip()
    ensure_test_images()
    return client


# Every namespace a test used, swept again when the session ends: a test's app may outlive its
# `ns` teardown (fixtures end in reverse order, and `app_factory` is set up first), and its
# scheduler, seeing its instances removed, can start a replacement that nothing then removes.
_NAMESPACES: set[str] = set()


@pytest.fixture
def ns(dock: Any) -> Iterator[str]:
    """A Docker namespace of the test's own; its containers are removed after the test."""
    from docker_support import remove_namespace

    namespace = f"test-{uuid.uuid4().hex[:10]}"
    _NAMESPACES.add(namespace)
    yield namespace
    remove_namespace(dock, namespace)


@pytest.fixture(scope="session", autouse=True)
def _sweep_namespaces() -> Iterator[None]:
    yield
    if _NAMESPACES:
        from docker_support import docker_client_or_skip, remove_namespace

        dock = docker_client_or_skip()
        for namespace in sorted(_NAMESPACES):
            remove_namespace(dock, namespace)


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[SchedulerBench]:
    """The Scheduler on a fake runtime and simulated GPUs, tick() driven (scheduler_support)."""
    from scheduler_support import open_bench

    async with open_bench(tmp_path) as made:
        yield made


@pytest.fixture(scope="module")
def swarm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmCluster]:
    """The three-node swarm of tests/swarm_support.py, one per module that uses it, removed at
    the module's end: kept for the whole session, its three engines and their heartbeats ran
    beside every later test, and timing-sensitive live tests failed under the extra load."""
    from swarm_support import open_cluster

    with open_cluster() as cluster:
        yield cluster


@pytest.fixture(
    params=[
        "fake",
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("swarm", marks=pytest.mark.docker),
    ]
)
async def kind(request: pytest.FixtureRequest) -> AsyncIterator[Kind]:
    """Each runtime of the runtime contract in turn: the FakeRuntime, Docker, Docker Swarm."""
    from runtime_support import open_kind

    cluster = request.getfixturevalue("swarm_cluster") if request.param == "swarm" else None
    async with open_kind(request.param, cluster) as made:
        yield made


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `cond` until it is truthy (returned) or `timeout` seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def bearer(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def admin() -> dict[str, str]:
    return bearer()


@pytest.fixture
def make_key(client: TestClient[Any]) -> Callable[..., str]:
    """Mint a key with the given scopes (and optional function resources) in the app's store."""

    def mint(*scopes: str, functions: tuple[str, ...] = ()) -> str:
        keys = client.app.state.platform.keys
        with client.portal() as portal:
            token, _ = portal.call(keys.create, list(scopes) or list(SCOPES), functions)
        return str(token)

    return mint


def call(client: TestClient[Any], fn: Callable[..., Any], *args: Any) -> Any:
    """Run a coroutine function of the app's platform on the app's event loop."""
    with client.portal() as portal:
        return portal.call(fn, *args)


def metric_samples(text: str) -> dict[str, float]:
    """A GET /metrics answer as {'name{labels}': value} (comment lines skipped)."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The run's measured lines (report_support), after the results."""
    from report_support import LINES

    if LINES:
        terminalreporter.section("measured")
        for line in LINES:
            terminalreporter.line(line)
