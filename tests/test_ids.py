"""Request and object ids (models.new_id): random version-4 UUIDs in canonical form, made in
batches ahead for the hot path; never repeated, not even by a forked child."""

from __future__ import annotations

import os
import uuid

from nvcf_lite.models import new_id, parse_uuid


def test_ids_are_canonical_random_uuids_and_never_repeat() -> None:
    ids = [new_id() for _ in range(20_000)]  # many batches
    assert len(set(ids)) == len(ids)
    for value in ids[:3000]:
        parsed = uuid.UUID(value)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == value == parse_uuid(value)
    # every variant digit occurs (the two random bits under the RFC 4122 variant)
    assert {value[19] for value in ids} == set("89ab")


def test_a_forked_child_does_not_repeat_the_ids_its_parent_made_ahead() -> None:
    new_id()  # the parent holds a batch made ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first ids, to the parent
        os.close(read)
        os.write(write, ",".join(new_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split(","))
    os.waitpid(pid, 0)
    parent = {new_id() for _ in range(300)}
    assert len(child) == 50 and not child & parent
