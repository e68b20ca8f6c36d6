"""Request-scoped access to the app's singletons (built in the lifespan, never at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from compliance_monitor.monitor import Monitor


def get_monitor(conn: HTTPConnection) -> Monitor:
    return conn.app.state.monitor  # type: ignore[no-any-return]
