"""The server's own log: one format for every line (text `key=value` or JSON lines), the ids of
what a line is about, and credentials scrubbed before anything is written.

A line about a request, function or instance carries its ids as fields: call sites pass them
with `extra=ids(...)` (or `extra=inst.log_ids()`), and code running for one thing (an
instance's launch task) binds them once with `bind(...)` so lines logged below it, in
libraries and worker threads too, carry them. Granian's own lines and its access log go
through the same formatters (`dict_config` is handed to granian, which applies it in both of
its processes).

Redaction is the second line of defence: API keys (`nvapi-...`), bearer/basic credentials,
JWTs and signed-URL signatures are replaced in every line, whatever logged them. Secret
values are arbitrary strings no pattern can find, so the first line is that no logger ever
receives them: the loggers that print statement parameters or request bodies at debug
(aiosqlite, urllib3, docker) are held at WARNING/INFO whatever `log_level` says.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import time
from collections.abc import Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

FORMATS = ("text", "json")
# The ids a line may be about, in the order text lines show them.
ID_FIELDS = ("request_id", "function_id", "version_id", "instance_id", "deployment_id")
# Loggers that print SQL parameters (secret values, request bodies) or HTTP request lines at
# debug: never below these levels.
QUIET = {"aiosqlite": logging.WARNING, "urllib3": logging.INFO, "docker": logging.INFO}
REDACTED = "[REDACTED]"
# granian's access line without its own timestamp (ours leads the line) and never the query
# string (signed URLs carry their signature there)
ACCESS_FORMAT = '%(addr)s "%(method)s %(path)s %(protocol)s" %(status)d %(dt_ms).3f ms'

_PATTERNS = (
    (re.compile(r"nvapi-[A-Za-z0-9_-]{4,}"), "nvapi-" + REDACTED),
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[REDACTED-JWT]"),
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]+"), r"\1\2" + REDACTED),
    (
        re.compile(
            r"(?i)\b(authorization|x-registry-auth|proxy-authorization)(['\"]?\s*[:=]\s*['\"]?)"
            r"(?!bearer\b|basic\b)[^\s'\",;}]+"
        ),
        r"\1\2" + REDACTED,
    ),
    (re.compile(r"(?i)\b(signature|x-amz-signature|sig)=[^&\s'\"#<>]+"), r"\1=" + REDACTED),
)
_ids: ContextVar[Mapping[str, str]] = ContextVar("nvcf_lite_log_ids", default=MappingProxyType({}))


def ids(**values: str | None) -> dict[str, str]:
    """`extra=` for a log call: the given ids, empty ones left out."""
    return {k: v for k, v in values.items() if v}


def bind(**values: str | None) -> None:
    """Attach ids to every later line of the current task (and the threads it starts).

    A task owns a copy of the context, so this never leaks into other tasks; call it at the
    top of a task that works on one thing.
    """
    _ids.set({**_ids.get(), **ids(**values)})


def redact(text: str) -> str:
    """The text with every known credential pattern replaced."""
    if not text:
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def record_ids(record: logging.LogRecord) -> dict[str, str]:
    """The ids of a record: its `extra=` fields over the ids bound to its task."""
    bound = _ids.get()
    found: dict[str, str] = {}
    for name in ID_FIELDS:
        value = record.__dict__.get(name) or bound.get(name)
        if value:
            found[name] = str(value)
    return found


def _message(record: logging.LogRecord) -> str:
    """The message, and for granian's access log its `%`-dict fields kept apart."""
    try:
        return record.getMessage()
    except (TypeError, ValueError):  # a broken format must not lose the line
        return f"{record.msg!r} {record.args!r}"


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    args = record.args
    if record.name != "granian.access" or not isinstance(args, Mapping):
        return {}
    keys = ("method", "path", "status", "dt_ms", "addr", "protocol")
    # the path only: query strings (signed URLs) are never logged
    found: dict[str, Any] = {k: args[k] for k in keys if k in args}
    if isinstance(found.get("dt_ms"), float):
        found["dt_ms"] = round(found["dt_ms"], 3)
    return found


class TextFormatter(logging.Formatter):
    """`2026-01-02 03:04:05,678 INFO nvcf_lite.scheduler: message key=value ...`.

    The id fields go on the message's first line, so `grep instance_id=...` finds the line
    even when a reason spans several lines.
    """

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt)

    def format(self, record: logging.LogRecord) -> str:
        message = _message(record)
        fields = " ".join(f"{k}={_text_value(v)}" for k, v in record_ids(record).items())
        if fields:
            first, newline, rest = message.partition("\n")
            message = f"{first} {fields}{newline}{rest}"
        head = f"{self.formatTime(record, self.datefmt)} {record.levelname} {record.name}: "
        text = head + message
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return redact(text)


def _text_value(value: str) -> str:
    return value if value and not re.search(r"[\s\"=]", value) else json.dumps(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the ids, exc (traceback) if any."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__()

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(_message(record)),
        }
        doc.update(record_ids(record))
        doc.update(_access_fields(record))
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = redact(record.exc_text)
        return json.dumps(doc, ensure_ascii=False, default=str)


def unredacted_json_line(logger: str, level: str, msg: str, **fields: str) -> str:
    """A line shaped like JsonFormatter's, written without redaction: only for the one
    deliberate exception, the first admin key, shown once (scripts grep the log for it)."""
    doc = {"ts": _iso(time.time()), "level": level, "logger": logger, "msg": msg, **fields}
    return json.dumps(doc, ensure_ascii=False)


def _iso(created: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created % 1 * 1000):03d}Z"


def dict_config(level: str = "info", log_format: str = "text") -> dict[str, Any]:
    """The logging config of the whole process: ours, granian's and the libraries' loggers.

    Handed to granian as `log_dictconfig` (it replaces granian's own formatters, handlers
    and loggers) and applied by `configure`.
    """
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    formatter = (
        "nvcf_lite.logs.JsonFormatter" if log_format == "json" else ("nvcf_lite.logs.TextFormatter")
    )
    handler = {"class": "logging.StreamHandler", "formatter": "nvcf", "stream": "ext://sys.stderr"}
    quiet = {
        name: {"level": logging.getLevelName(max(numeric, floor))} for name, floor in QUIET.items()
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"nvcf": {"()": formatter}},
        "handlers": {"nvcf": handler},
        "root": {"handlers": ["nvcf"], "level": level.upper()},
        "loggers": {
            # granian's loggers keep their names; they propagate to the root handler
            "_granian": {"level": level.upper(), "handlers": [], "propagate": True},
            "granian.access": {"level": "INFO", "handlers": [], "propagate": True},
            **quiet,
        },
    }


def configure(level: str = "info", log_format: str = "text") -> None:
    logging.config.dictConfig(dict_config(level, log_format))
