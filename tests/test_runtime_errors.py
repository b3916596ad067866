"""Docker's errors in words a user can act on (runtime/docker.py `_translate`), no engine needed.

The texts are the daemon's own, as `docker run --gpus` prints them on hosts without the NVIDIA
container toolkit, with a broken driver, and for a GPU the toolkit does not know.
"""

from __future__ import annotations

import docker.errors
import pytest
import requests

from nvcf_lite.runtime.base import ImageNotFound, RuntimeFailure
from nvcf_lite.runtime.docker import DockerRuntime

HOOK = (
    "failed to create shim task: OCI runtime create failed: runc create failed: unable to start"
    " container process: error during container init: error running hook #0: error running"
    " hook: exit status 1, stdout: , stderr: "
)


def api_error(text: str, status: int) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError(f"{status} error", response=response, explanation=text)


def translate(text: str) -> str:
    runtime = DockerRuntime("unix:///nowhere.sock", api_timeout_s=1, pull_timeout_s=1)
    status = 409 if text.startswith("Conflict") else 500
    failure = runtime._translate(api_error(text, status), "create", "c1")
    assert isinstance(failure, RuntimeFailure)
    return str(failure)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'could not select device driver "nvidia" with capabilities: [[gpu]]',
            "this Docker host has no NVIDIA container toolkit (could not select device driver",
        ),
        (
            "Unknown runtime specified nvidia",
            "this Docker host has no NVIDIA container toolkit (Unknown runtime specified nvidia)",
        ),
        (
            HOOK + "nvidia-container-cli: device error: GPU-1234: unknown device: unknown",
            "the NVIDIA container toolkit refused: nvidia-container-cli: device error: GPU-1234:"
            " unknown device",
        ),
        (
            HOOK + "Auto-detected mode as 'legacy'\n"
            "nvidia-container-cli: initialization error: nvml error: driver not loaded: unknown",
            "the NVIDIA container toolkit refused: nvidia-container-cli: initialization error:"
            " nvml error: driver not loaded",
        ),
        (
            'Conflict. The container name "/c1" is already in use by container "abc"',
            "a container named 'c1' already exists",
        ),
        ("something else broke", "Docker create failed: something else broke"),
    ],
)
def test_translations(text: str, expected: str) -> None:
    assert translate(text).startswith(expected)


def test_missing_image_is_its_own_kind() -> None:
    runtime = DockerRuntime("unix:///nowhere.sock", api_timeout_s=1, pull_timeout_s=1)
    exc = docker.errors.ImageNotFound("404", explanation="No such image: x:1")
    assert isinstance(runtime._translate(exc, "create", "c1"), ImageNotFound)
