"""Deployment request rules (spec §2.2.1): specification fields, counts, autoscaling (pure)."""

from __future__ import annotations

from typing import Any

import msgspec

from nvcf_lite.domain.placement import Host
from nvcf_lite.errors import Invalid
from nvcf_lite.models import GpuSpec, new_id

MAX_CONCURRENCY = 16384
CONFIG_REJECTED = (
    "The configuration field in Gpu specification should be empty for container based functions."
)


class SpecInput(msgspec.Struct, kw_only=True):
    """A requested spec, already parsed from the wire (fields may be missing)."""

    gpu: str | None = None
    instance_type: str | None = None
    min_instances: int | None = None
    max_instances: int | None = None
    max_request_concurrency: int | None = None
    gpu_specification_id: str | None = None
    backend: str | None = None
    clusters: list[str] | None = None
    regions: list[str] | None = None
    attributes: list[str] | None = None
    availability_zones: list[str] | None = None
    configuration: Any = None
    autoscaling_configuration: dict[str, Any] | None = None
    autoscaling_configuration_policy: str | None = None
    warm_pool_seconds: float | None = None


def where(fid: str, vid: str) -> str:
    return f"Function id '{fid}', version '{vid}'"


def check_counts(spec: SpecInput, prefix: str) -> tuple[int, int, int]:
    if spec.min_instances is None or spec.max_instances is None:
        raise Invalid(f"{prefix}: minInstances and maxInstances are required")
    if spec.min_instances < 0:
        raise Invalid(f"{prefix}: minInstances must be >= 0")
    if spec.max_instances < 1:
        raise Invalid(f"{prefix}: maxInstances must be > 0")
    if spec.min_instances > spec.max_instances:
        raise Invalid(
            f"{prefix}: minInstances ({spec.min_instances}) must be <= maxInstances "
            f"({spec.max_instances})"
        )
    concurrency = 1 if spec.max_request_concurrency is None else spec.max_request_concurrency
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise Invalid(f"{prefix}: maxRequestConcurrency must be between 1 and {MAX_CONCURRENCY}")
    return spec.min_instances, spec.max_instances, concurrency


def check_autoscaling(config: dict[str, Any] | None, prefix: str) -> None:
    if not config:
        return
    for part, above in (("scaleUpDetails", True), ("scaleDownDetails", False)):
        details = config.get(part)
        if details is None:
            continue
        if not isinstance(details, dict):
            raise Invalid(f"{prefix}: autoscalingConfiguration.{part} must be an object")
        factor = details.get("factor")
        if factor is not None:
            if not isinstance(factor, int | float) or (factor <= 1.0 if above else factor >= 1.0):
                rule = "> 1.0" if above else "< 1.0"
                raise Invalid(f"{prefix}: autoscalingConfiguration.{part}.factor must be {rule}")
        threshold = details.get("threshold")
        if threshold is not None and not (
            isinstance(threshold, int | float) and 0 <= threshold <= 100
        ):
            raise Invalid(f"{prefix}: autoscalingConfiguration.{part}.threshold must be 0..100")


def check_warm_pool(seconds: float | None, prefix: str) -> float | None:
    if seconds is not None and not 0 <= seconds <= 86400:
        raise Invalid(f"{prefix}: warmPoolSeconds must be between 0 and 86400")
    return seconds


def build_spec(host: Host, spec: SpecInput, index: int) -> GpuSpec:
    prefix = f"deploymentSpecifications[{index}]"
    if spec.configuration:
        raise Invalid(CONFIG_REJECTED)
    if not spec.gpu:
        raise Invalid(f"{prefix}: gpu is required; this host offers: {host.offer_text()}")
    gpu, instance_type, _ = host.resolve(spec.gpu, spec.instance_type)
    low, high, concurrency = check_counts(spec, prefix)
    check_autoscaling(spec.autoscaling_configuration, prefix)
    return GpuSpec(
        gpu_specification_id=new_id(),
        gpu=gpu,
        instance_type=instance_type,
        min_instances=low,
        max_instances=high,
        max_request_concurrency=concurrency,
        backend=spec.backend or "local",
        clusters=spec.clusters,
        regions=spec.regions,
        attributes=spec.attributes,
        availability_zones=spec.availability_zones,
        autoscaling_configuration=spec.autoscaling_configuration,
        autoscaling_configuration_policy=spec.autoscaling_configuration_policy,
        warm_pool_seconds=check_warm_pool(spec.warm_pool_seconds, prefix),
    )


def match_specs(specs: list[SpecInput], current: list[GpuSpec]) -> list[GpuSpec]:
    """Pair requested specs with current ones: by gpuSpecificationId, else by position."""
    by_id = {s.gpu_specification_id: s for s in current}
    paired = []
    for index, spec in enumerate(specs):
        if spec.gpu_specification_id:
            if spec.gpu_specification_id not in by_id:
                raise Invalid(
                    f"deploymentSpecifications[{index}]: unknown gpuSpecificationId "
                    f"'{spec.gpu_specification_id}'"
                )
            paired.append(by_id[spec.gpu_specification_id])
        else:
            paired.append(current[index])
    return paired
