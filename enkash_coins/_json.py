"""JSON in one place: orjson when installed (the ``fast`` extra), the standard library otherwise."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["BACKEND", "dumps", "loads"]

try:
    import orjson  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None  # type: ignore[assignment, unused-ignore]


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # built once, not per call


def _not_json(value: object) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The C encoder json.dumps builds on every call, built once here (every allocation
# encodes a body): the same bytes as ``_encode``. No circular-reference check: the SDK
# encodes only the flat dicts it built. Without the C accelerator, ``_encode`` does it.
_make_encoder = getattr(json.encoder, "c_make_encoder", None)
if _make_encoder is None:  # pragma: no cover - CPython has the accelerator

    def _std_dumps(data: Any) -> bytes:
        return _encode(data).encode()

else:
    _chunks = _make_encoder(None, _not_json, json.encoder.encode_basestring, None, ":", ",", False, False, True)

    def _std_dumps(data: Any) -> bytes:
        return "".join(_chunks(data, 0)).encode()


def _std_loads(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, too deep
        raise ValueError(str(exc)) from None


if orjson is not None:
    BACKEND = "orjson"
    _orjson_loads = orjson.loads
    dumps = orjson.dumps

    def loads(content: bytes) -> Any:
        """Parse JSON, or raise ValueError for anything that is not (bad UTF-8, too deep...)."""
        try:
            return _orjson_loads(content)
        except ValueError as exc:  # orjson.JSONDecodeError
            raise ValueError(str(exc)) from None

else:  # pragma: no cover
    BACKEND = "json"
    dumps = _std_dumps
    loads = _std_loads
