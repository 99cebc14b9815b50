"""The API's routes, named once: the allocator, the fake and fault injection all use this table."""

from __future__ import annotations

__all__ = ["ALLOCATE", "BALANCE", "CREATE_EVENT", "EVENT", "NAMES", "TOKEN", "name_of"]

TOKEN = "/oauth/token"
ALLOCATE = "/api/v0/enkash-coins/allocate-coin"
CREATE_EVENT = "/api/v0/enkash-coins/create-coins-config"
EVENT = "/api/v0/enkash-coins/"  # + coinConfigId: GET reads it, PATCH updates it
BALANCE = "/api/v0/coins/balance"  # ?userId=...

#: Route names, as fault injection and logs know them.
NAMES = frozenset({"token", "allocate", "create_event", "get_event", "update_event", "balance"})


def name_of(method: str, path: str) -> str | None:
    """The route name of a request (``path`` without its query), or None for no route."""
    if path.endswith(TOKEN):
        return "token"
    if path == ALLOCATE:
        return "allocate"
    if path == CREATE_EVENT:
        return "create_event"
    if path == BALANCE:
        return "balance"
    if path.startswith(EVENT) and "/" not in path[len(EVENT):]:
        return "update_event" if method.upper() == "PATCH" else "get_event"
    return None
