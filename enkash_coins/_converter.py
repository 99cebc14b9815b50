"""The one cattrs converter: snake_case attributes <-> the wire's camelCase keys."""

from __future__ import annotations

import functools
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._checks import is_int
from ._models import AllocationRequest, CoinEvent, Configuration, CreateEventBody, UpdateEventBody

__all__ = ["converter", "make_converter"]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {type(value).__name__}")
    return value


def _strict_int(value: Any, _: type) -> int:
    if not is_int(value):
        raise TypeError(f"expected an integer, not {type(value).__name__}")
    return value


def _same(value: str | None) -> str | None:
    return value


def _configuration(value: Any, _: type) -> Configuration:
    return Configuration(_strict_str(value, str))


def make_converter() -> cattrs.Converter:
    """Build a converter that renames every field of the wire models to camelCase.

    Fields whose default is None are left out when None, which gives PATCH bodies
    that carry only the fields a caller set.
    """
    conv = cattrs.Converter()
    # Strict from the wire: cattrs would turn null into 'None', 10.9 into 10 and true into 1.
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(Configuration, _configuration)  # a str subclass: not the str hook
    conv.register_unstructure_hook(str | None, _same)  # optional ids are sent as they are (the hot path)
    for cls in (AllocationRequest, CoinEvent, CreateEventBody, UpdateEventBody):
        overrides: dict[str, Any] = {
            a.name: override(rename=_camel(a.name), omit_if_default=a.default is None)
            for a in attrs.fields(cls)
        }
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **overrides))
        conv.register_structure_hook(cls, make_dict_structure_fn(cls, conv, **overrides))
    return conv


@functools.cache
def converter() -> cattrs.Converter:
    return make_converter()
