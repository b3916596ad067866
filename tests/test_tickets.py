"""A request's lifecycle (domain/tickets.py): the legal moves of a Ticket, and that any other
move raises instead of silently corrupting the request's state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from nvcf_lite.domain.tickets import IllegalTransition, Stage, Ticket
from nvcf_lite.models import Outcome, RequestRecord, new_id


async def _ticket() -> Ticket:
    rec = RequestRecord(
        request_id=new_id(),
        function_id=new_id(),
        version_id=new_id(),
        nca_id="acct",
        key_id="k1",
        method="POST",
        path="/echo",
        headers=[],
        body=b"{}",
        poll_seconds=5,
        mode="pexec",
        accepted_at=time.time(),
    )
    return Ticket(record=rec, subject="s", done=asyncio.get_running_loop().create_future())


async def test_a_request_that_runs_retries_and_ends_on_its_connection() -> None:
    ticket = await _ticket()
    assert ticket.stage is Stage.QUEUED and ticket.nvcf_status == "pending-evaluation"
    ticket.note = "waiting for an instance to start"
    ticket.start()
    assert ticket.stage is Stage.RUNNING and ticket.note is None
    assert ticket.nvcf_status == "in-progress"
    ticket.requeue()  # never reached its container
    assert ticket.stage is Stage.QUEUED and ticket.nvcf_status == "pending-evaluation"
    ticket.start()
    ticket.lease()
    assert ticket.leased
    assert ticket.finishing() is False  # nobody detached it: not kept
    assert ticket.finished and ticket.nvcf_status == "in-progress"
    ticket.finished_as(kept=False)
    assert ticket.stage is Stage.DONE and ticket.finished and not ticket.kept


async def test_a_detached_request_is_kept_and_a_recovered_one_is_detached() -> None:
    ticket = await _ticket()
    ticket.detach()
    assert ticket.finishing() is True  # ended before it ran (a cancel, a refusal)
    assert ticket.nvcf_status == "pending-evaluation"
    ticket.finished_as(kept=True)
    assert ticket.stage is Stage.KEPT and ticket.kept
    recovered = Ticket.recovered(ticket.record, "s", asyncio.get_running_loop().create_future())
    assert recovered.detached and recovered.stage is Stage.QUEUED


async def test_illegal_moves_raise() -> None:
    ticket = await _ticket()
    for move in (ticket.requeue, ticket.lease, lambda: ticket.finished_as(kept=False)):
        with pytest.raises(IllegalTransition):
            move()
    ticket.start()
    with pytest.raises(IllegalTransition):
        ticket.start()
    ticket.lease()
    with pytest.raises(IllegalTransition):
        ticket.lease()  # one lease counts one attempt
    ticket.finishing()
    ends: tuple[Callable[[], object], ...] = (ticket.start, ticket.requeue, ticket.finishing)
    for end in ends:
        with pytest.raises(IllegalTransition):
            end()
    ticket.finished_as(kept=False)
    with pytest.raises(IllegalTransition):
        ticket.detach()  # after its end there is nothing to poll for
    with pytest.raises(IllegalTransition):
        ticket.finished_as(kept=True)


async def test_a_request_is_cancelled_once_and_never_after_its_end() -> None:
    ticket = await _ticket()
    ticket.cancel("the client disconnected")
    assert ticket.cancelled == "the client disconnected"
    with pytest.raises(IllegalTransition):
        ticket.cancel("again")
    done = await _ticket()
    done.done.set_result(Outcome(status=200))
    with pytest.raises(IllegalTransition):
        done.cancel("too late")
