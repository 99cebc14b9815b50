"""A Griffe extension for this site: the ``__init__`` that attrs generates, made visible.

Griffe reads the source, and an ``@attrs.frozen`` / ``@attrs.define`` class has no
``__init__`` there: its signature would render empty, and its docstring's ``Args:``
section would be reported as documenting parameters that do not exist. Once the
package is loaded, each attrs class of ``enkash_coins`` without an ``__init__`` of its
own gets one built from the real class (``attrs.fields``, imported at build time):
same names (attrs' aliases), order, keyword-only-ness and defaults, with the
annotations Griffe read from the source (so they cross-reference).

Nothing in ``enkash_coins/`` changes.
"""

from __future__ import annotations

import importlib
from typing import Any

import attrs
import griffe


class AttrsInit(griffe.Extension):
    """Give every attrs class of ``enkash_coins`` the ``__init__`` attrs generates for it."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.path != "enkash_coins":
            return
        for cls in _classes(pkg, set()):
            if "__init__" in cls.members or not _is_attrs(cls):
                continue
            runtime = _runtime(cls)
            if runtime is None or not attrs.has(runtime):
                continue
            cls.set_member("__init__", _init(cls, runtime))


def _classes(obj: griffe.Object, seen: set[str]) -> Any:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if obj.is_class:
        yield obj
    for member in obj.members.values():
        if not member.is_alias and (member.is_module or member.is_class):
            yield from _classes(member, seen)  # type: ignore[arg-type]


def _is_attrs(cls: griffe.Class) -> bool:
    for decorator in cls.decorators:
        path = getattr(decorator.value, "canonical_path", str(decorator.value))
        if path.split("(", 1)[0].split(".", 1)[0] in ("attrs", "attr"):
            return True
    return False


def _runtime(cls: griffe.Class) -> type | None:
    try:
        module = importlib.import_module(cls.module.path)
    except ImportError:
        return None
    obj: Any = module
    for part in cls.path[len(cls.module.path) + 1:].split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, type) else None


def _default(field: attrs.Attribute[Any]) -> str | None:
    default = field.default
    if default is attrs.NOTHING:
        return None
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        factory = default.factory  # type: ignore[attr-defined]
        return f"{getattr(factory, '__name__', 'factory')}()"
    return repr(default)


def _init(cls: griffe.Class, runtime: type) -> griffe.Function:
    parameters = [griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword)]
    for field in attrs.fields(runtime):
        if not field.init:
            continue
        member = cls.members.get(field.name)
        annotation = getattr(member, "annotation", None) if member is not None else None
        if annotation is None and field.type is not None:
            annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", None)
        kind = griffe.ParameterKind.keyword_only if field.kw_only else griffe.ParameterKind.positional_or_keyword
        parameters.append(griffe.Parameter(field.alias or field.name, annotation=annotation, kind=kind,
                                           default=_default(field)))
    return griffe.Function("__init__", lineno=cls.lineno, endlineno=cls.lineno, parent=cls,
                           parameters=griffe.Parameters(*parameters), returns="None")
