"""PullTracker: Docker's pull status lines become layer and byte progress (no Docker needed).

The lines are the ones the engine sends (seen from Docker 20.10 pulling from the test
registry): a layer becomes known at "Pulling fs layer" or "Waiting", its size and bytes come
with "Downloading", and it is done at "Pull complete" or "Already exists". Progress is a
change in bytes or layer states; the same line again is not progress, so a stall is seen.
"""

from __future__ import annotations

from typing import Any

from nvcf_lite.runtime.pull_progress import PullTracker

IMAGE = "127.0.0.1:5000/team/model:1"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def downloading(layer: str, current: int, total: int) -> dict[str, Any]:
    return {
        "status": "Downloading",
        "id": layer,
        "progressDetail": {"current": current, "total": total},
        "progress": "[==>   ]",
    }


def test_layers_and_bytes_add_up_as_the_engine_reports_them() -> None:
    clock = Clock()
    t = PullTracker(IMAGE, clock)
    t.feed({"status": "Pulling from team/model", "id": "1"})  # the tag, not a layer
    for layer in ("aaa", "bbb", "ccc"):
        t.feed({"status": "Pulling fs layer", "id": layer, "progressDetail": {}})
    t.feed({"status": "Already exists", "id": "ccc", "progressDetail": {}})
    t.feed(downloading("aaa", 1_000_000, 4_000_000))
    t.feed(downloading("bbb", 500, 1_000))
    p = t.snapshot()
    assert (p.layers_done, p.layers_total) == (1, 3)
    assert (p.bytes_done, p.bytes_total) == (1_000_500, 4_001_000)
    assert p.status == "Downloading" and p.image == IMAGE
    t.feed({"status": "Download complete", "id": "bbb", "progressDetail": {}})
    t.feed({"status": "Extracting", "id": "bbb", "progressDetail": {"current": 10, "total": 99}})
    t.feed({"status": "Pull complete", "id": "bbb", "progressDetail": {}})
    p = t.snapshot()
    assert (p.layers_done, p.bytes_done) == (2, 1_001_000)
    assert p.text() == (f"pulling image {IMAGE}: 2/3 layers, 1.0 of 4.0 MB (25%), 0 s so far")


def test_only_a_change_is_progress() -> None:
    clock = Clock()
    t = PullTracker(IMAGE, clock)
    t.feed({"status": "Pulling fs layer", "id": "aaa", "progressDetail": {}})
    t.feed(downloading("aaa", 10, 100))
    clock.now += 5
    t.feed(downloading("aaa", 10, 100))  # the same line again: no new bytes
    t.feed({"status": "Downloading", "id": "aaa", "progressDetail": {"current": 10}})
    assert t.idle_s() == 5 and t.snapshot().idle_s == 5
    t.feed(downloading("aaa", 11, 100))
    assert t.idle_s() == 0
    clock.now += 2
    assert t.snapshot().elapsed_s == 7


def test_milestones_are_each_tenth_of_the_bytes_and_each_layer_not_each_chunk() -> None:
    t = PullTracker(IMAGE, Clock())
    t.feed({"status": "Pulling fs layer", "id": "aaa", "progressDetail": {}})
    logged = [t.feed(downloading("aaa", n * 10_000, 1_000_000)) for n in range(1, 101)]
    messages = [m for m in logged if m]
    assert len(messages) == 10  # 10%, 20%, ... 100% of 100 chunks
    assert messages[0].endswith("0.1 of 1.0 MB (10%), 0 s so far")
    done = t.feed({"status": "Pull complete", "id": "aaa", "progressDetail": {}})
    assert done is not None and done.endswith("(layer aaa: pull complete)")
    assert "1/1 layers" in done
