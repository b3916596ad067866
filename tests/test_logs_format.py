"""The server's log lines (nvcf_lite/logs.py): text with `key=value` ids or JSON lines, ids from
`extra=` and from the task's bound context, credentials scrubbed, and the libraries that print
SQL parameters or request lines at debug held above it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import aiosqlite
import pytest

from nvcf_lite import logs

KEY = "nvapi-" + "k" * 60 + "LEAK"
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJrZXkifQ.c2lnbmF0dXJlLWJ5dGVz"
SIGNED = "http://127.0.0.1:8080/v2/nvcf/assets/a1/content?expires=1999999999&signature=SiGnAtUrE"
FID = "11111111-1111-4111-8111-111111111111"
IID = "22222222-2222-4222-8222-222222222222"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger writes through our formatter into a buffer; restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield io.StringIO()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in logs.QUIET:
        logging.getLogger(name).setLevel(logging.NOTSET)


def use(buffer: io.StringIO, log_format: str, level: str = "debug") -> None:
    logs.configure(level, log_format)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)


def test_text_lines_carry_ids_on_the_first_line(captured: io.StringIO) -> None:
    use(captured, "text")
    log = logging.getLogger("nvcf_lite.scheduler")
    log.warning("instance failed: %s", "exited\nlast lines", extra=logs.ids(instance_id=IID))
    first, second = captured.getvalue().splitlines()
    assert " WARNING nvcf_lite.scheduler: instance failed: exited " in first
    assert first.endswith(f"instance_id={IID}") and second == "last lines"


async def test_ids_bound_in_a_task_reach_lines_below_it_and_threads_only(
    captured: io.StringIO,
) -> None:
    use(captured, "json")
    log = logging.getLogger("nvcf_lite.runtime")

    async def launch() -> None:
        logs.bind(function_id=FID, instance_id=IID)
        log.info("pulling")
        await asyncio.to_thread(log.info, "in a thread")

    await asyncio.create_task(launch())
    log.info("elsewhere")
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert [(x["msg"], x.get("instance_id")) for x in lines] == [
        ("pulling", IID),
        ("in a thread", IID),
        ("elsewhere", None),
    ]
    assert lines[0]["function_id"] == FID and lines[0]["level"] == "INFO"
    assert lines[0]["logger"] == "nvcf_lite.runtime" and lines[0]["ts"].endswith("Z")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_credentials_are_scrubbed_from_messages_and_tracebacks(
    captured: io.StringIO, log_format: str
) -> None:
    use(captured, log_format)
    log = logging.getLogger("some.library")
    log.info("Authorization: Bearer %s then %s", KEY, JWT)
    log.info("headers {'authorization': 'Basic JG9hdXRodG9rZW46bnZhcGk='}")
    log.info("X-Registry-Auth=eyJ1c2VybmFtZSI6InUifQ== GET %s", SIGNED)
    try:
        raise RuntimeError(f"upload to {SIGNED} with key {KEY} failed")
    except RuntimeError:
        log.exception("failed")
    text = captured.getvalue()
    for secret in (KEY, "LEAK", JWT, "SiGnAtUrE", "JG9hdXRodG9rZW46bnZhcGk=", "eyJ1c2VybmFtZSI6"):
        assert secret not in text, text
    assert "signature=[REDACTED]" in text and "expires=1999999999" in text
    assert "Bearer [REDACTED]" in text and "nvapi-[REDACTED]" in text
    if log_format == "json":
        assert all(json.loads(line) for line in text.splitlines())


async def test_debug_never_prints_sqlite_parameters(captured: io.StringIO, tmp_path: Path) -> None:
    use(captured, "text", level="debug")
    logging.getLogger("nvcf_lite").debug("debug is on")
    async with aiosqlite.connect(tmp_path / "x.db") as db:
        await db.execute("CREATE TABLE s (value TEXT)")
        await db.execute("INSERT INTO s VALUES (?)", ("the-secret-value",))
        await db.commit()
    assert "debug is on" in captured.getvalue()
    assert "the-secret-value" not in captured.getvalue()
    assert logging.getLogger("aiosqlite").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("urllib3").getEffectiveLevel() == logging.INFO


def test_granian_access_lines_have_fields_and_no_query(captured: io.StringIO) -> None:
    use(captured, "json", level="info")
    atoms = {"addr": "127.0.0.1", "method": "GET", "path": "/v2/nvcf/assets/a1/content"}
    atoms |= {"status": 200, "dt_ms": 1.23456, "protocol": "HTTP/1.1", "query_string": "sig=1"}
    logging.getLogger("granian.access").info('"%(method)s %(path)s" %(status)d', atoms)
    (line,) = [json.loads(x) for x in captured.getvalue().splitlines()]
    assert line["path"] == "/v2/nvcf/assets/a1/content" and line["status"] == 200
    assert line["dt_ms"] == 1.235 and "query_string" not in line


def test_bad_format_or_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        logs.dict_config("info", "xml")
    with pytest.raises(ValueError, match="log level"):
        logs.dict_config("loud", "text")
