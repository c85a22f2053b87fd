"""Structured JSON logs (structlog), with rollout, namespace and wave bound on every line."""

from __future__ import annotations

import logging
import sys

import structlog

# kopf logs every handler run at INFO; the watch-event handlers that only wake a rollout's loop run on
# every change of every rollout and Deployment, and their "succeeded" lines would drown the rest.
QUIET_HANDLERS = ("rollout_changed", "deployment_changed", "approval_changed", "policy_changed")


class _QuietWakers(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = record.getMessage()
        return not any(message == f"Handler {name!r} succeeded." for name in QUIET_HANDLERS)


def configure(level: str = "INFO") -> None:
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
    ))
    handler.addFilter(_QuietWakers())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("kubernetes").setLevel("WARNING")
    logging.getLogger("urllib3").setLevel("WARNING")


def logger(**bound: object) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger("guarded").bind(**bound)
