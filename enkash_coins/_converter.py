"""The one cattrs converter: snake_case attributes <-> the wire's camelCase keys."""

from __future__ import annotations

import functools
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._models import AllocationRequest, CoinEvent, CreateEventBody, UpdateEventBody

__all__ = ["converter", "make_converter"]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def make_converter() -> cattrs.Converter:
    """Build a converter that renames every field of the wire models to camelCase.

    Fields whose default is None are left out when None, which gives PATCH bodies
    that carry only the fields a caller set.
    """
    conv = cattrs.Converter()
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
