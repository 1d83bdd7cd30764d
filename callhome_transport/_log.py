"""Per-connection log context: ``device=SN-0001 peer=[::1]:53122 conn=7 message``."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class ContextAdapter(logging.LoggerAdapter[logging.Logger]):
    """Prefixes each message with its connection's stable context and passes
    the same keys as ``extra`` for structured handlers."""

    def __init__(self, logger: logging.Logger, **context: object) -> None:
        super().__init__(logger, dict(context))

    def bind(self, **context: object) -> None:
        """Add keys to the context (e.g. ``device`` once identified)."""
        self.extra = {**(self.extra or {}), **context}

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        order = ("device", "peer", "conn")
        prefix = " ".join(f"{key}={extra[key]}" for key in order if key in extra)
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return (f"{prefix} {msg}" if prefix else msg), kwargs
