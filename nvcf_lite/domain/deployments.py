"""Deployments (spec §2.2): validation, desired state and the status rules of §3.1.

The API writes desired state here; the Scheduler (workers/) makes containers match it and
reports back through `version_status` and health info.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from nvcf_lite.domain.deployment_rules import (
    CONFIG_REJECTED,
    SpecInput,
    build_spec,
    check_autoscaling,
    check_counts,
    check_warm_pool,
    match_specs,
    where,
)
from nvcf_lite.domain.placement import Host
from nvcf_lite.errors import Invalid, NotFound
from nvcf_lite.models import (
    INSTANCE_STATUS,
    ActiveInstance,
    Deployment,
    FunctionStatus,
    FunctionVersion,
    GpuSpec,
    InstanceView,
    SpecState,
    new_id,
    now_iso,
)
from nvcf_lite.store.deployments import DeploymentsRepo
from nvcf_lite.store.sqlite import Database


class VersionRef(msgspec.Struct, frozen=True):
    """What the deployment rules need to know about a function version."""

    function_id: str
    version_id: str
    nca_id: str
    name: str
    status: FunctionStatus
    deployable_reason: str | None = None  # why this version cannot run on this host, if so


def version_ref(version: FunctionVersion) -> VersionRef:
    """What deploying needs to know about a registered version (and whether it can run here)."""
    reason = None
    if version.helm_chart:
        reason = "Helm chart functions cannot run on nvcf-lite (Docker only); use containerImage"
    elif not version.container_image and not version.models:
        reason = "functions without a containerImage or models cannot run on nvcf-lite"
    return VersionRef(
        function_id=version.function_id,
        version_id=version.version_id,
        nca_id=version.nca_id,
        name=version.name,
        status=version.status,
        deployable_reason=reason,
    )


VersionLookup = Callable[[str, str], Awaitable[VersionRef | None]]
Reconcile = Callable[[], None]
"""Desired state changed: make the containers match it (the Scheduler's nudge)."""
InstancesOf = Callable[[str], list[InstanceView]]
"""version_id -> the running instances of that version (the Scheduler's views)."""
SpecStatesOf = Callable[[str], list[SpecState]]
"""version_id -> the autoscaling state of each of its specifications."""
Busy = Callable[[str], bool]
"""version_id -> whether it has queued or in-flight requests (graceful undeploy waits)."""


class Deployments:
    def __init__(
        self,
        db: Database,
        repo: DeploymentsRepo,
        host: Host,
        lookup: VersionLookup,
        nca_id: str,
        *,
        reconcile: Reconcile,
        instances: InstancesOf,
        spec_states: SpecStatesOf,
        busy: Busy,
    ) -> None:
        self._db = db
        self._repo = repo
        self.host = host
        self._lookup = lookup
        self._nca_id = nca_id
        self._reconcile = reconcile
        self.instances = instances
        self.spec_states = spec_states
        self._busy = busy

    async def version(self, fid: str, vid: str) -> VersionRef:
        ref = await self._lookup(fid, vid)
        if ref is None:
            raise NotFound(f"{where(fid, vid)}: Not found in account '{self._nca_id}'")
        return ref

    async def create(self, fid: str, vid: str, specs: list[SpecInput]) -> Deployment:
        ref = await self.version(fid, vid)
        if not specs:
            raise Invalid("deploymentSpecifications must not be empty")
        built = [build_spec(self.host, s, i) for i, s in enumerate(specs)]
        if ref.deployable_reason:
            raise Invalid(f"{where(fid, vid)}: {ref.deployable_reason}")
        now = now_iso()
        deployment = Deployment(
            deployment_id=new_id(),
            function_id=fid,
            version_id=vid,
            nca_id=ref.nca_id,
            specs=built,
            created_at=now,
            updated_at=now,
        )
        status = (
            FunctionStatus.ACTIVE
            if all(s.min_instances == 0 for s in built)
            else FunctionStatus.DEPLOYING
        )
        async with self._db.transaction() as tx:
            existing = await self._repo.by_version(vid, tx)
            current = await self._repo.version_status(tx, vid)
            self._refuse_redeploy(fid, vid, current, existing)
            await self._repo.insert(tx, deployment)
            await self._repo.set_version_status(tx, vid, status, now)
        self._reconcile()
        return deployment

    @staticmethod
    def _refuse_redeploy(
        fid: str, vid: str, status: FunctionStatus | None, existing: Deployment | None
    ) -> None:
        if existing is not None and existing.draining:
            raise Invalid(
                f"{where(fid, vid)}: Status INACTIVE, a graceful undeploy is still draining. "
                "Wait for current deployment to be gracefully completed and removed."
            )
        if status == FunctionStatus.ERROR:
            raise Invalid(f"{where(fid, vid)}: Function already has a deployment with errors")
        if existing is not None or status not in (FunctionStatus.INACTIVE, None):
            raise Invalid(
                f"{where(fid, vid)}: Status {status}, use PUT to update current deployment"
            )

    async def get(self, fid: str, vid: str) -> Deployment:
        await self.version(fid, vid)
        deployment = await self._repo.by_version(vid)
        if deployment is None or deployment.draining:
            raise NotFound(f"{where(fid, vid)}: Deployment not found")
        return deployment

    async def with_status(self, d: Deployment) -> tuple[VersionRef, Deployment]:
        """The version's status and then the deployment row, read in that order.

        The scheduler commits a deployment's healthInfo before the status it explains, so
        reading the status first means an ERROR is never shown without its reason (a GET
        that read the row first and the status after could see the ERROR but not why).
        """
        ref = await self.version(d.function_id, d.version_id)
        fresh = await self._repo.by_id(d.deployment_id)
        return ref, fresh or d

    async def by_id(self, deployment_id: str, nca_id: str | None = None) -> Deployment:
        """A deployment by id; with `nca_id`, only that account's (others are 404)."""
        deployment = await self._repo.by_id(deployment_id)
        if deployment is None or nca_id not in (None, deployment.nca_id):
            raise NotFound(f"Deployment '{deployment_id}' not found")
        return deployment

    async def all(self, nca_id: str | None = None) -> list[Deployment]:
        """The live deployments (of account `nca_id` only, when given)."""
        return [d for d in await self._repo.all() if nca_id in (None, d.nca_id) and not d.draining]

    async def update(self, fid: str, vid: str, specs: list[SpecInput]) -> Deployment:
        """D3: new min/max/concurrency for the current specs (GPU and type are read-only)."""
        deployment = await self.get(fid, vid)
        if len(specs) != len(deployment.specs):
            raise Invalid(
                f"deploymentSpecifications must list the {len(deployment.specs)} current "
                "specification(s); GPU types cannot be added or removed by an update"
            )
        for index, (new, old) in enumerate(
            zip(specs, match_specs(specs, deployment.specs), strict=True)
        ):
            self._apply(new, old, f"deploymentSpecifications[{index}]")
        return await self._save(deployment)

    async def patch_spec(self, deployment_id: str, spec_id: str, patch: SpecInput) -> GpuSpec:
        """D6: change one spec's min/max and autoscaling."""
        deployment = await self.by_id(deployment_id)
        spec = next((s for s in deployment.specs if s.gpu_specification_id == spec_id), None)
        if spec is None:
            raise NotFound(
                f"GPU specification '{spec_id}' not found in deployment '{deployment_id}'"
            )
        merged = SpecInput(
            min_instances=spec.min_instances
            if patch.min_instances is None
            else patch.min_instances,
            max_instances=spec.max_instances
            if patch.max_instances is None
            else patch.max_instances,
            max_request_concurrency=patch.max_request_concurrency,
            autoscaling_configuration=patch.autoscaling_configuration,
            autoscaling_configuration_policy=patch.autoscaling_configuration_policy,
            warm_pool_seconds=patch.warm_pool_seconds,
        )
        self._apply(merged, spec, "gpuSpecification")
        await self._save(deployment)
        return spec

    def _apply(self, new: SpecInput, old: GpuSpec, prefix: str) -> None:
        if new.gpu and new.gpu.lower() != old.gpu.lower():
            raise Invalid(f"{prefix}: gpu cannot be changed ('{old.gpu}'); redeploy instead")
        if new.instance_type and new.instance_type.lower() != old.instance_type.lower():
            raise Invalid(
                f"{prefix}: instanceType cannot be changed ('{old.instance_type}'); "
                "redeploy instead"
            )
        if new.configuration:
            raise Invalid(CONFIG_REJECTED)
        low, high, concurrency = check_counts(new, prefix)
        check_autoscaling(new.autoscaling_configuration, prefix)
        old.min_instances, old.max_instances = low, high
        if new.max_request_concurrency is not None:
            old.max_request_concurrency = concurrency
        if new.autoscaling_configuration is not None:
            old.autoscaling_configuration = new.autoscaling_configuration
        if new.autoscaling_configuration_policy is not None:
            old.autoscaling_configuration_policy = new.autoscaling_configuration_policy
        if new.warm_pool_seconds is not None:
            old.warm_pool_seconds = check_warm_pool(new.warm_pool_seconds, prefix)

    async def _save(self, deployment: Deployment) -> Deployment:
        """Store new specs; the scheduler derives the status. A version stays invocable while
        the instances a raised minInstances asks for start (requests queue for them)."""
        deployment.updated_at = now_iso()
        async with self._db.transaction() as tx:
            await self._repo.save(tx, deployment)
        self._reconcile()
        return deployment

    async def undeploy(self, fid: str, vid: str, graceful: bool) -> None:
        """D4: INACTIVE at once; containers go now, or after queued and in-flight work when
        graceful. A graceful undeploy with no such work is immediate (spec §2.2.4), so the
        version can be deployed again at once (ngcsdk `restart` is DELETE graceful + POST)."""
        await self.version(fid, vid)
        async with self._db.transaction() as tx:
            deployment = await self._repo.by_version(vid, tx)
            if deployment is None or deployment.draining:
                raise NotFound(f"{where(fid, vid)}: Deployment not found")
            await self._repo.set_version_status(tx, vid, FunctionStatus.INACTIVE, now_iso())
            if graceful and self._busy(vid):
                deployment.draining = True
                deployment.updated_at = now_iso()
                await self._repo.save(tx, deployment)
            else:
                await self._repo.delete(tx, deployment.deployment_id)
        self._reconcile()

    async def force_remove(self, fid: str, vid: str) -> None:
        """Before a version is deleted (spec §2.1.4): drop its deployment, if any."""
        async with self._db.transaction() as tx:
            deployment = await self._repo.by_version(vid, tx)
            if deployment is not None:
                await self._repo.delete(tx, deployment.deployment_id)
        if deployment is not None:
            self._reconcile()


def active_instance(view: InstanceView, nca_id: str) -> ActiveInstance:
    """An instance as F6 `activeInstances` shows it (InstanceDto)."""
    return ActiveInstance(
        instance_id=view.instance_id,
        function_id=view.function_id,
        function_version_id=view.version_id,
        nca_id=nca_id,
        instance_status=INSTANCE_STATUS[view.state],
        instance_type=view.instance_type,
        gpu=view.gpu,
        backend="local",
        location="local",
        icms_request_id=view.gpu_specification_id,
        instance_created_at=view.created_at,
        instance_updated_at=view.updated_at,
    )
