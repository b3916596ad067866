"""What the server loads at start stays small: idle RSS is a target (issue #12, <= 80 MB with
the console and every worker started, printed by `scripts/bench_invoke.py --memory`).

Three libraries cost about 35 MB of RSS between them and are needed only by rare paths, so they
load on first use: aiohttp (shipping to a telemetry endpoint, a webhook delivery), httpx (the
`status` command, which also brought in httpx's own CLI: click, rich, pygments) and
cryptography (the first secret sealed or opened). grpcio loads only with a gRPC port set. This
test fails when an import at module level brings one back.
"""

from __future__ import annotations

import json
import subprocess
import sys

from nvcf_lite.store.sealing import SecretBox

LAZY = ("aiohttp", "httpx", "cryptography", "rich", "click", "pygments", "grpc")

PROBE = """
import json, sys
import nvcf_lite.__main__ as main
main._parser()  # every command's parser, as `nvcf-lite serve` builds it
import nvcf_lite.app, nvcf_lite.platform
from granian.server.embed import Server  # what `serve` imports to run
from nvcf_lite.store.sealing import SecretBox
SecretBox(b"k" * 32)  # made at start; it must not load its cipher yet
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_serving_imports_none_of_the_lazy_libraries() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = set(json.loads(out.stdout))
    assert "litestar" in loaded and "granian" in loaded  # the probe did load the server
    assert loaded.isdisjoint(LAZY), sorted(loaded & set(LAZY))


def test_a_lazily_made_box_still_seals_and_opens() -> None:
    box = SecretBox(b"s" * 32)
    sealed = box.seal(b"value", "function-secrets:v1")
    assert box.open(sealed, "function-secrets:v1") == b"value"
