"""What a launch runs and pulls: the image reference after `registry.mirrors`, the local
twins that spare a pull, and the registry credential sent with the pull.

A registry that refuses the pull for authentication fails the start with words an operator
can act on (domain/registry_credentials.refused_reason): which registry, whether credentials
were sent, and the endpoint that adds or fixes them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from nvcf_lite.domain.image_references import mirrored
from nvcf_lite.domain.registry import local_image_candidates
from nvcf_lite.domain.registry_credentials import refused_reason
from nvcf_lite.runtime.base import ContainerRuntime, PullRefused, RegistryAuth, RuntimeFailure
from nvcf_lite.workers.instances import LaunchInfo

# (account, the image reference pulled) -> the registry credential to send, or None; raises
# RuntimeFailure when the credential's secret does not open.
PullAuthLookup = Callable[[str, str], Awaitable[RegistryAuth | None]]


async def _no_auth(nca_id: str, image: str) -> RegistryAuth | None:
    return None


class Pulls:
    def __init__(
        self,
        runtime: ContainerRuntime,
        mirrors: Mapping[str, str],
        pull_auth: PullAuthLookup | None = None,
    ) -> None:
        self.runtime = runtime
        self.mirrors = dict(mirrors)
        self.pull_auth = pull_auth or _no_auth

    async def resolve(self, image: str) -> tuple[str, bool]:
        """The reference to run and whether the engine has it: the first present of the
        mirrored reference, the stored one and its local twin without the nvcr.io/ prefix
        ngcsdk adds; else the mirrored one, to pull."""
        pulled = mirrored(image, self.mirrors)
        for ref in dict.fromkeys((pulled, *local_image_candidates(image))):
            if await self.runtime.image_exists(ref):
                return ref, True
        return pulled, False

    async def pull(self, info: LaunchInfo, image: str) -> bool:
        """Pull `image` (resolved from `info.image`) with the account's credential for its
        registry; True when a pull was needed. Raises RuntimeFailure with the reason."""
        auth = await self.pull_auth(info.nca_id, image)
        try:
            return await self.runtime.ensure_image(image, auth)
        except PullRefused as exc:
            reason = refused_reason(exc.image, exc.auth, info.image)
            raise RuntimeFailure(f"{reason} (the registry said: {exc.detail})") from exc
