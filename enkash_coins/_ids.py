"""requestId generation: random ids for one-off calls, derived ids for campaigns."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time

from ._exceptions import InvalidInputError

__all__ = ["derive_request_id", "new_request_id"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_NOT_WORD = re.compile(r"[^A-Z0-9]+")


def _crockford(number: int, digits: int) -> str:
    out = []
    for _ in range(digits):
        number, rem = divmod(number, 32)
        out.append(_CROCKFORD[rem])
    return "".join(reversed(out))


def new_request_id() -> str:
    """A fresh, collision-free requestId: ``COIN_`` and a 26-character ULID.

    48 bits of millisecond time then 80 random bits, in upper-case Crockford base32
    (URL-safe, sortable by creation time, e.g. ``COIN_01JD3X6Q0M8V4S1T2ZB7K9WQ5E``).
    Two ids made in the same millisecond collide with odds 2**-80.
    """
    ms = time.time_ns() // 1_000_000
    return "COIN_" + _crockford((ms << 80) | int.from_bytes(os.urandom(10), "big"), 26)


def derive_request_id(campaign: str, *parts: object) -> str:
    """A stable requestId for one row of a campaign; same input, same id, every run.

    The id is ``<PREFIX>_<HASH>``: up to 16 upper-case letters and digits of the
    campaign name (for people reading logs), then 26 base32 characters (130 bits) of
    a SHA-256 over the exact campaign name and parts. Length is at most 43
    characters, URL-safe. For a campaign of n rows the chance that any two distinct
    rows share an id is about n**2 / 2**131 (about 4e-28 for a million rows).

    Args:
        campaign: the campaign's name, e.g. ``"DIWALI_2026"``.
        parts: what identifies the row, e.g. user id and event. Strings and ints are
            told apart (``1`` and ``"1"`` give different ids).
    """
    if not isinstance(campaign, str) or not campaign.strip():
        raise InvalidInputError("campaign must be a non-empty string")
    if not parts:
        raise InvalidInputError("derive_request_id needs at least one part identifying the row")
    digest = hashlib.sha256()
    for item in (campaign, *parts):
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise InvalidInputError(
                f"request id parts must be strings or integers, not {type(item).__name__}"
            )
        data = (("s" if isinstance(item, str) else "i") + str(item)).encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    code = base64.b32encode(digest.digest()).decode("ascii")[:26]
    prefix = _NOT_WORD.sub("", campaign.upper())[:16] or "C"
    return f"{prefix}_{code}"
