"""Request and result values: frozen, slotted attrs classes that validate themselves.

Validation happens here, at construction, so bad input raises
:class:`InvalidInputError` before anything is sent.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

import attrs

from ._checks import is_int
from ._exceptions import InvalidInputError

__all__ = [
    "Allocation",
    "AllocationRequest",
    "CoinEvent",
    "Configuration",
    "Envelope",
]

#: Longest id or event name accepted. The API documents no limit (see the reference's
#: "Not documented" list); this bound only keeps absurd input off the wire.
MAX_TEXT_LENGTH = 128
#: Largest coin amount accepted for an event (undocumented upstream; an assumption).
MAX_AMOUNT = 1_000_000_000
_PATH_UNSAFE = frozenset("/?#%\\")
# The common case, checked in one C-level match: plain ASCII ids and event names.
# ("." and "..", which would climb a URL path, are not plain ids.)
_PLAIN_ID = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9_.:@+=-]{1,128}")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:@+=-](?:[A-Za-z0-9_.:@+= -]{0,126}[A-Za-z0-9_.:@+=-])?")
_plain_id, _plain_name = _PLAIN_ID.fullmatch, _PLAIN_NAME.fullmatch


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def check_text(what: str, value: object, *, is_id: bool) -> str:
    """Return ``value`` if it is a usable id (``is_id``) or event name, else raise.

    Ids end up in URL paths and query strings, so they may not contain whitespace
    or ``/ ? # % \\``; event names may contain inner spaces.
    """
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, not {type(value).__name__}")
    if (_plain_id if is_id else _plain_name)(value):
        return value
    if not value:
        raise InvalidInputError(f"{what} must not be empty")
    if is_id and value in (".", ".."):  # they would climb a URL path
        raise InvalidInputError(f"{what} {value!r} is not a usable id")
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidInputError(
            f"{what} is {len(value)} characters long; at most {MAX_TEXT_LENGTH} are accepted"
        )
    if value != value.strip():
        raise InvalidInputError(f"{what} {_shown(value)} has surrounding whitespace")
    for char in value:
        if unicodedata.category(char)[0] == "C":
            raise InvalidInputError(f"{what} {_shown(value)} contains a control character")
        if not is_id and char.isspace() and char != " ":
            raise InvalidInputError(f"{what} {_shown(value)} contains {char!r}; names may contain spaces, "
                                    "but no other whitespace (tabs, line or paragraph separators)")
        if is_id and (char.isspace() or char in _PATH_UNSAFE):
            raise InvalidInputError(
                f"{what} {_shown(value)} contains {char!r}; ids may not contain "
                "whitespace or any of / ? # % \\"
            )
    return value


def check_amount(value: object) -> int:
    if not is_int(value):
        raise InvalidInputError(f"amount must be an integer, not {type(value).__name__}")
    if not 0 < value <= MAX_AMOUNT:
        raise InvalidInputError(f"amount must be between 1 and {MAX_AMOUNT}, not {value}")
    return value


def _id(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None or attribute.default is attrs.NOTHING:
        check_text(attribute.name, value, is_id=True)


def _name(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_text(attribute.name, value, is_id=False)


class Configuration(enum.StrEnum):
    """How an event's coin amount is configured.

    Values EnKash adds later still decode: ``Configuration("NEW")`` yields a
    pseudo-member whose ``value`` is ``"NEW"`` instead of crashing a response decode.
    Input from callers is checked strictly against the known members.
    """

    DEFAULT = "DEFAULT"
    CUSTOM = "CUSTOM"

    @classmethod
    def _missing_(cls, value: object) -> Configuration | None:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value
        member._value_ = value
        return member

    @classmethod
    def parse(cls, value: object) -> Configuration:
        """Strictly parse caller input: only the documented members are accepted."""
        if isinstance(value, Configuration) and value.name in cls.__members__:
            return value
        if isinstance(value, str) and value in cls.__members__:
            return cls[value]
        raise InvalidInputError(
            f"configuration must be one of {', '.join(cls.__members__)}, not {value!r}"
        )


@attrs.frozen(kw_only=True)
class AllocationRequest:
    """One allocation: credit ``user_id`` the coins configured for ``event``.

    ``request_id`` and ``company_id`` may be left out; the allocator then generates
    the id and uses its own company. A given ``request_id`` is sent as is.
    """

    company_id: str | None = None
    event: str
    request_id: str | None = None
    user_id: str

    def __attrs_post_init__(self) -> None:
        # One check per request, not a validator per field (it is on every allocation's
        # path): the common case is four C-level matches; anything else gets check_text's
        # full rules and precise error, field by field in order.
        try:
            if (_plain_id(self.user_id) and _plain_name(self.event)
                    and (self.request_id is None or _plain_id(self.request_id))
                    and (self.company_id is None or _plain_id(self.company_id))):
                return
        except TypeError:  # not a string: check_text says which
            pass
        for name, value, is_id in (("company_id", self.company_id, True), ("event", self.event, False),
                                   ("request_id", self.request_id, True), ("user_id", self.user_id, True)):
            if value is not None or name in ("event", "user_id"):
                check_text(name, value, is_id=is_id)

    def with_defaults(self, *, company_id: str, request_id: str) -> AllocationRequest:
        """A copy with the missing company and requestId filled in.

        Both arguments must already be valid (the allocator checks them); the fields
        this request holds were checked when it was built, so nothing is re-checked.
        """
        new = object.__new__(AllocationRequest)
        for name, value in (("company_id", self.company_id or company_id), ("event", self.event),
                            ("request_id", self.request_id or request_id), ("user_id", self.user_id)):
            object.__setattr__(new, name, value)
        return new

    @classmethod
    def from_mapping(cls, data: object) -> AllocationRequest:
        """Build from a mapping with the same keys (``user_id``, ``event``, ...)."""
        if isinstance(data, AllocationRequest):
            return data
        if not isinstance(data, Mapping):
            raise InvalidInputError(
                f"an allocation must be an AllocationRequest or a mapping, not {type(data).__name__}"
            )
        unknown = set(data) - _REQUEST_KEYS
        if unknown:
            raise InvalidInputError(f"unknown allocation field(s): {', '.join(sorted(map(str, unknown)))}")
        missing = {"user_id", "event"} - set(data)
        if missing:
            raise InvalidInputError(f"allocation is missing {', '.join(sorted(missing))}")
        return cls(**{str(k): v for k, v in data.items()})


_REQUEST_KEYS = frozenset(a.name for a in attrs.fields(AllocationRequest))


@attrs.frozen(kw_only=True)
class Allocation:
    """A successful allocation, as acknowledged by EnKash."""

    request_id: str
    company_id: str
    user_id: str
    event: str
    message: str


def _amount(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_amount(value)


@attrs.frozen(kw_only=True)
class CoinEvent:
    """A coin event configuration: ``amount`` coins are credited per allocation of ``event``.

    Validated like caller input, so an answer from the wire that is not a usable
    event (an empty id, a negative amount) is refused when it is decoded.
    """

    coin_config_id: str = attrs.field(validator=_id)
    configuration: Configuration
    event: str = attrs.field(validator=_name)
    amount: int = attrs.field(validator=_amount)


@attrs.frozen
class Envelope:
    """The JSON envelope every coins endpoint answers with."""

    response_code: int
    response_message: str
    payload: Any = None


@attrs.frozen(kw_only=True)
class CreateEventBody:
    configuration: Configuration
    company_id: str
    event: str
    amount: int


@attrs.frozen(kw_only=True)
class UpdateEventBody:
    amount: int | None = None
    configuration: Configuration | None = None
    company_id: str | None = None
    event: str | None = None
