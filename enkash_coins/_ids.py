"""requestId generation: random ids for one-off calls, derived ids for campaigns."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import time

from ._checks import is_int
from ._exceptions import InvalidInputError

__all__ = ["derive_request_id", "derive_row_id", "new_request_id"]

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
    rows share an id is about n**2 / 2**131 (about 4e-28 for a million rows). The
    derivation never changes between versions: a journal's ids stay valid.

    Args:
        campaign: the campaign's name, e.g. ``"DIWALI_2026"``.
        parts: what identifies the row, e.g. user id and event. Strings and ints are
            told apart (``1`` and ``"1"`` give different ids).
    """
    if not isinstance(campaign, str) or not campaign.strip():
        raise InvalidInputError("campaign must be a non-empty string")
    if not parts:
        raise InvalidInputError("derive_request_id needs at least one part identifying the row")
    prefix, head = _campaign(campaign)
    chunks = [head]
    for item in parts:
        if isinstance(item, str):
            data = ("s" + item).encode("utf-8", "surrogatepass")
        elif is_int(item):
            data = ("i" + str(item)).encode()
        else:
            raise InvalidInputError(f"request id parts must be strings or integers, not {type(item).__name__}")
        chunks.append(len(data).to_bytes(8, "big"))
        chunks.append(data)
    return prefix + _code(b"".join(chunks))


def derive_row_id(campaign: str, company_id: str, user_id: str, event: str) -> str:
    """``derive_request_id(campaign, company_id, user_id, event)`` for validated strings, faster.

    The bulk command derives a million of these; the company and event repeat, so
    their share of the hash input is computed once.
    """
    prefix, head = _campaign(campaign)
    user = ("s" + user_id).encode("utf-8", "surrogatepass")
    return prefix + _code(head + _part(company_id) + len(user).to_bytes(8, "big") + user + _part(event))


def _code(data: bytes) -> str:
    """The first 130 bits of SHA-256(data) in RFC 4648 base32, ten bits (two characters) at a time."""
    n = int.from_bytes(hashlib.sha256(data).digest()[:17], "big") >> 6
    p = _PAIRS
    return (p[n >> 120 & 1023] + p[n >> 110 & 1023] + p[n >> 100 & 1023] + p[n >> 90 & 1023]
            + p[n >> 80 & 1023] + p[n >> 70 & 1023] + p[n >> 60 & 1023] + p[n >> 50 & 1023]
            + p[n >> 40 & 1023] + p[n >> 30 & 1023] + p[n >> 20 & 1023] + p[n >> 10 & 1023] + p[n & 1023])


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_PAIRS = [_B32[i >> 5] + _B32[i & 31] for i in range(1024)]


@functools.lru_cache(maxsize=1024)
def _part(value: str) -> bytes:
    data = ("s" + value).encode("utf-8", "surrogatepass")
    return len(data).to_bytes(8, "big") + data


@functools.lru_cache(maxsize=64)
def _campaign(campaign: str) -> tuple[str, bytes]:
    """The id prefix of a campaign, and the hash input its name contributes."""
    data = ("s" + campaign).encode("utf-8", "surrogatepass")
    prefix = _NOT_WORD.sub("", campaign.upper())[:16] or "C"
    return prefix + "_", len(data).to_bytes(8, "big") + data
