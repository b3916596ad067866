"""The wire base: camelCase field names, null and default fields omitted (spec §1.3)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


class Wire(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """Base of every request and response body. Unknown request fields are ignored.

    Names: a whole body is `*Request` or `*Response`; every other wire struct is `*Wire`, named
    after its domain twin where it has one (`HealthWire` for `HealthCheck`). The twins' field
    sets are held equal by tests/test_wire_fields.py.
    """


def to_wire(obj: Any, wire_type: type[T]) -> T:
    """Map a snake_case domain record onto its camelCase wire twin, field by field."""
    return msgspec.convert(obj, wire_type, from_attributes=True)
