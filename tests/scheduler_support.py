"""The scheduler on a fake runtime and simulated GPUs over real SQLite, driven by tick():
`SchedulerBench`, `open_bench()` (the `bench` fixture of conftest) and `sim()` GPU units."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from conftest import make_config
from fake_runtime import FakeRuntime

from nvcf_lite.config import Config
from nvcf_lite.domain.deployment_rules import SpecInput
from nvcf_lite.domain.deployments import Deployments, version_ref
from nvcf_lite.domain.placement import GpuUnit, Host
from nvcf_lite.models import (
    FunctionStatus,
    FunctionVersion,
    HealthCheck,
    InstanceState,
    new_id,
    now_iso,
)
from nvcf_lite.store.deployments import DeploymentsRepo
from nvcf_lite.store.functions import FunctionsRepo
from nvcf_lite.store.sealing import SecretBox
from nvcf_lite.store.sqlite import Database
from nvcf_lite.workers.capacity import CapacityChanged
from nvcf_lite.workers.instances import launch_info
from nvcf_lite.workers.scheduler import Scheduler

NCA = "nvcf-lite-local"


def sim(gpu: str, n: int, start: int = 0, physical: bool = False) -> list[GpuUnit]:
    return [
        GpuUnit(
            unit_id=f"SIM-{gpu}-{i}", gpu=gpu, index=start + i, memory_mb=1024, physical=physical
        )
        for i in range(n)
    ]


class StubDemand:
    """The requests a test says are waiting: `depth_of(version_id)` (none unless it says)."""

    def __init__(self) -> None:
        self.depth_of: Callable[[str], int] = lambda version_id: 0

    def depth(self, version_id: str) -> int:
        return self.depth_of(version_id)


class SchedulerBench:
    """A Scheduler and the Deployments over real SQLite repos, a FakeRuntime and a `host` of
    simulated GPUs; `until` ticks the scheduler until a condition holds."""

    def __init__(self, config: Config, db: Database, host: Host, runtime: FakeRuntime) -> None:
        self.config, self.db, self.host, self.runtime = config, db, host, runtime
        self.functions = FunctionsRepo(db, SecretBox(bytes(32)))
        self.repo = DeploymentsRepo(db)

        async def lookup(fid: str, vid: str) -> Any:
            v = await self.functions.get(fid, vid)
            return version_ref(v) if v else None

        # As before the wiring moved into constructors: the bench's deployments see the
        # current scheduler's instances, nudge nothing, report no scaling state, and drain.
        self.deployments = Deployments(
            db,
            self.repo,
            host,
            lookup,
            NCA,
            reconcile=lambda: None,
            instances=lambda version_id: self.scheduler.views(version_id),
            spec_states=lambda version_id: [],
            busy=lambda version_id: True,
        )
        self.demand = StubDemand()
        self.scheduler = self.new_scheduler()

    def new_scheduler(self) -> Scheduler:
        async def info(vid: str) -> Any:
            v = await self.functions.get_version(vid)
            return launch_info(v, await self.functions.secrets(vid)) if v else None

        return Scheduler(
            self.config,
            self.repo,
            self.runtime,
            self.host,
            info,
            demand=self.demand,
            changed=CapacityChanged(),
        )

    async def function(
        self, image: str = "fake/echo", secrets: dict[str, Any] | None = None
    ) -> tuple[str, str]:
        fid, vid = new_id(), new_id()
        version = FunctionVersion(
            function_id=fid,
            version_id=vid,
            nca_id=NCA,
            name="fn",
            status=FunctionStatus.INACTIVE,
            inference_url="/echo",
            health_uri="/health",
            health=HealthCheck(
                protocol="HTTP", uri="/health", port=8000, timeout="PT1S", expected_status_code=200
            ),
            created_at=now_iso(),
            container_image=image,
        )
        await self.functions.insert(version, secrets or {})
        return fid, vid

    async def deploy(self, image: str = "fake/echo", **spec: Any) -> tuple[str, str]:
        fid, vid = await self.function(image)
        fields = {"gpu": "L40", "min_instances": 1, "max_instances": 2, **spec}
        await self.deployments.create(fid, vid, [SpecInput(**fields)])
        return fid, vid

    async def status(self, vid: str) -> FunctionStatus:
        v = await self.functions.get_version(vid)
        assert v is not None
        return v.status

    async def until(self, cond: Callable[[], Any], limit_s: float = 5.0) -> None:
        deadline = time.monotonic() + limit_s
        while True:
            await self.scheduler.tick()
            result = cond()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.02)

    def live(self, vid: str) -> list[Any]:
        return [i for i in self.scheduler.views(vid) if i.state != InstanceState.FAILED]


@asynccontextmanager
async def open_bench(tmp_path: Path) -> AsyncIterator[SchedulerBench]:
    """A bench on short scheduler timings, L40 x2, A100 MIG x2 and one physical H100, 2 CPU slots;
    its instances are removed and its database closed on exit."""
    config = make_config(
        tmp_path / "data",
        NVCF_LITE_SCHEDULER__STARTUP_DEADLINE_S="0.4",
        NVCF_LITE_SCHEDULER__RESTART_BACKOFF_INITIAL_S="0.05",
        NVCF_LITE_SCHEDULER__RESTART_BACKOFF_MAX_S="0.2",
        NVCF_LITE_SCHEDULER__DEPLOY_ATTEMPTS="2",
        NVCF_LITE_SCHEDULER__HEALTH_INTERVAL_S="0.05",
        NVCF_LITE_SCHEDULER__UNHEALTHY_THRESHOLD="2",
        NVCF_LITE_SCHEDULER__SCALE_DOWN_IDLE_S="0.2",
    )
    db = await Database.open(tmp_path / "data" / "db.sqlite")
    host = Host(
        [
            *sim("L40", 2),
            *sim("A100_MIG_1g.5gb", 2, start=10),
            *sim("H100", 1, start=20, physical=True),
        ],
        cpu_instance_max=2,
    )
    bench = SchedulerBench(config, db, host, FakeRuntime())
    try:
        yield bench
    finally:
        await bench.scheduler.shutdown(keep_instances=False)
        await bench.runtime.close()
        await db.close()
