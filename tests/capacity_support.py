"""`StubCapacity`: the dispatcher's view of capacity (workers/capacity.py) without a scheduler.

The dispatcher's tests arrange instances here directly; tests/test_capacity_contract.py holds
the stub to the same assertions as the real Scheduler, so it cannot drift from it.
"""

from __future__ import annotations

import math
import time

from nvcf_lite.errors import GONE, WORKER_ERROR
from nvcf_lite.models import Deployment, GpuSpec, InstanceState, new_id
from nvcf_lite.workers.capacity import Refusal
from nvcf_lite.workers.instances import Instance


class StubCapacity:
    """Deployments, instances, errors and failed starts set by the test; `nudges` counted."""

    def __init__(self, function_id: str | None = None) -> None:
        self.function_id = function_id or new_id()
        self.deployed: dict[str, Deployment] = {}
        self.errors: dict[str, str] = {}
        self.failed_starts: dict[str, tuple[float, str]] = {}  # version id -> (when, why)
        self.instances: dict[str, Instance] = {}
        self.nudges = 0

    # -- arranging ----------------------------------------------------------------------------

    def deploy(self, version_id: str, concurrency: int = 1) -> GpuSpec:
        spec = GpuSpec(
            gpu_specification_id=new_id(),
            gpu="CPU",
            instance_type="CPU.x1",
            min_instances=1,
            max_instances=2,
            max_request_concurrency=concurrency,
        )
        self.deployed[version_id] = Deployment(
            deployment_id=new_id(),
            function_id=self.function_id,
            version_id=version_id,
            nca_id="acct",
            specs=[spec],
            created_at="",
            updated_at="",
        )
        return spec

    def add_instance(
        self, version_id: str, spec: GpuSpec, state: InstanceState = InstanceState.READY
    ) -> Instance:
        inst = Instance(
            instance_id=new_id(),
            deployment_id=self.deployed[version_id].deployment_id,
            function_id=self.function_id,
            version_id=version_id,
            spec_id=spec.gpu_specification_id,
            gpu="CPU",
            instance_type="CPU.x1",
            units=[],
        )
        inst.set_state(state)
        self.instances[inst.instance_id] = inst
        return inst

    def fail(self, version_id: str, why: str) -> None:
        """Its instances could not start, and it went to ERROR."""
        for inst in [i for i in self.instances.values() if i.version_id == version_id]:
            del self.instances[inst.instance_id]
        self.failed_starts[version_id] = (time.monotonic(), why)
        self.errors[version_id] = why

    # -- Capacity -----------------------------------------------------------------------------

    def ready(self, version_id: str) -> list[Instance]:
        return [
            i
            for i in self.instances.values()
            if i.version_id == version_id and i.state == InstanceState.READY
        ]

    def slots(self, inst: Instance) -> int:
        deployment = self.deployed.get(inst.version_id)
        for spec in deployment.specs if deployment else ():
            if spec.gpu_specification_id == inst.spec_id:
                return max(1, spec.max_request_concurrency)
        return max(1, inst.slots)

    def refusal(self, version_id: str, queued_at: float) -> Refusal | None:
        failed = self.failed_starts.get(version_id)
        if failed is not None and version_id in self.deployed and queued_at < failed[0]:
            detail = f"no instance could start for this request: {failed[1]}"
            return Refusal(503, WORKER_ERROR, detail, queued_before=failed[0], failed=True)
        if version_id in self.errors and version_id in self.deployed:
            detail = f"the function version cannot start: {self.errors[version_id]}"
            return Refusal(503, WORKER_ERROR, detail)
        if version_id not in self.deployed:
            detail = f"Function version '{version_id}' is not deployed (undeployed before it ran)"
            return Refusal(404, GONE, detail, queued_before=math.inf)
        return None

    def has_instances(self, version_id: str) -> bool:
        return any(i.version_id == version_id for i in self.instances.values())

    def nudge(self) -> None:
        self.nudges += 1

    def unreachable(self, inst: Instance, why: str) -> None:
        if inst.state == InstanceState.READY:
            inst.set_state(InstanceState.UNHEALTHY, f"a request could not reach it: {why}")
        self.nudge()
