"""Function management (spec §2.1). Being written."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

FUNCTION_HANDLERS: list[ControllerRouterHandler] = []
