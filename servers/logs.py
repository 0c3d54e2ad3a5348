"""Logging: the access log (one line per response, the same on every loop) and the command
line's setup.

Engines and drivers call ``log_access(client, method, target, status, nbytes)`` once per
response when ``config.access_log`` is true; it logs one line at INFO on the
``pipeparse.access`` logger. `configure_logging` (the command line's) sends every
``pipeparse.*`` logger to stderr. `single_exception` unwraps a one-exception group, for
readable logs and errors.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

__all__ = ["ACCESS_LOGGER", "configure_logging", "log_access", "single_exception"]

ACCESS_LOGGER = "pipeparse.access"
_access = logging.getLogger(ACCESS_LOGGER)


def log_access(
    client: tuple[str, int] | None, method: bytes, target: bytes, status: int, nbytes: int
) -> None:
    """Log one response on ``pipeparse.access``: ``HOST:PORT "METHOD TARGET" STATUS BYTES``.

    Engines call it once per response, when ``config.access_log`` is true; `nbytes` is the
    body size sent. It costs one level check when the logger is disabled.
    """
    if not _access.isEnabledFor(logging.INFO):
        return
    peer = f"{client[0]}:{client[1]}" if client else "-"
    _access.info(
        '%s "%s %s" %d %d',
        peer,
        method.decode("latin-1"),
        target.decode("latin-1"),
        status,
        nbytes,
    )


def configure_logging(level: str, access_log: bool) -> None:
    """Send the ``pipeparse.*`` loggers to stderr at `level` (the command line's setup).

    With `access_log`, ``pipeparse.access`` logs at INFO whatever `level` is; without, it is
    off. Calling it again replaces the handler it installed.
    """
    logger = logging.getLogger("pipeparse")
    for handler in [h for h in logger.handlers if getattr(h, "_pipeparse", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s pipeparse[%(process)d] %(levelname)s: %(message)s")
    )
    handler._pipeparse = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    _access.setLevel(logging.INFO if access_log else logging.CRITICAL + 1)


def single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception of `group` (nested groups included) when it holds one, else `group`."""
    leaves = list(_leaves(group))
    return leaves[0] if len(leaves) == 1 else group


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc
