"""A Griffe extension for this site: the docstrings' Sphinx roles, rendered as Markdown.

The SDK's docstrings cross-reference with Sphinx roles (:class:`CoinAllocator`,
:meth:`reset`, :func:`...`), which Markdown would show as literal text. Once the
package is loaded, every docstring's roles become autorefs links
(``[`CoinAllocator`][enkash_coins.CoinAllocator]``) when the target is an object this
site documents, and plain code (```ssl.SSLContext```) otherwise; a ``~`` keeps the
last name only, as in Sphinx. A paragraph ending in ``::`` (a reST literal block
follows) ends in ``:`` instead.

Nothing in ``enkash_coins/`` changes: only the copy of the docstrings that the site
renders. The docstrings stay readable in ``help()`` and editors.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(class|meth|func|attr|mod|exc|data|obj):`(~?)([^`]+)`")
LITERAL = re.compile(r"(?m)^(.*\S)?::$")


def _public(pkg: griffe.Module) -> dict[str, str]:
    """Every name the site documents, mapped to the path the reference pages render it under."""
    names: dict[str, str] = {}
    # enkash_coins.testing first: the test doubles that enkash_coins re-exports are
    # rendered (and so linked) under enkash_coins.testing only.
    for module in (pkg.members.get("testing"), pkg):
        if not isinstance(module, griffe.Module):
            continue
        exported = [str(name) for name in (module.exports or [])]
        for name in exported:
            if name.startswith("_"):
                continue
            path = f"{module.path}.{name}"
            names.setdefault(name, path)
    return names


class SphinxRoles(griffe.Extension):
    """Turn ``:role:`target``` into autorefs links or code spans, site-wide."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.path != "enkash_coins":
            return
        public = _public(pkg)
        for obj in _walk(pkg):
            docstring = obj.docstring
            if docstring is None or (":" not in docstring.value):
                continue
            owner = _owner(obj, public)
            value = ROLE.sub(lambda m, owner=owner: _replace(m, owner, public, pkg), docstring.value)
            docstring.value = LITERAL.sub(lambda m: (m.group(1) or "") + (":" if m.group(1) else ""), value)


def _walk(obj: griffe.Object, seen: set[str] | None = None) -> Any:
    seen = set() if seen is None else seen
    if obj.path in seen:
        return
    seen.add(obj.path)
    yield obj
    for member in obj.members.values():
        if member.is_alias:
            continue
        yield from _walk(member, seen)  # type: ignore[arg-type]


def _owner(obj: griffe.Object, public: dict[str, str]) -> str | None:
    """The public path of the class ``obj`` belongs to (or is), for ``:meth:`reset``` and the like."""
    current: griffe.Object | None = obj
    while current is not None:
        if current.is_class and current.name in public:
            return public[current.name]
        current = current.parent  # type: ignore[assignment]
    return None


def _replace(match: re.Match[str], owner: str | None, public: dict[str, str], pkg: griffe.Module) -> str:
    role, tilde, target = match.groups()
    shown = target.rsplit(".", 1)[-1] if tilde else target
    if role in ("meth", "func"):
        shown += "()"
    path = _resolve(target, owner, public, pkg)
    return f"[`{shown}`][{path}]" if path else f"`{shown}`"


def _resolve(target: str, owner: str | None, public: dict[str, str], pkg: griffe.Module) -> str | None:
    """The documented path ``target`` names, or None (external, private, or not rendered)."""
    if target.startswith("enkash_coins."):
        rest = target[len("enkash_coins."):]
        if rest == "testing":
            return "enkash_coins.testing"
        head = rest.split(".", 1)[0]
        return _member(public.get(head), rest.split(".")[1:], pkg)
    head, _, tail = target.partition(".")
    if head in public:
        return _member(public[head], tail.split(".") if tail else [], pkg)
    if owner is not None and "." not in target:
        return _member(owner, [target], pkg)
    return None


def _member(path: str | None, parts: list[str], pkg: griffe.Module) -> str | None:
    if path is None:
        return None
    try:
        obj: Any = pkg[path[len("enkash_coins."):]]
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    for part in parts:
        if part.startswith("_"):
            return None
        try:
            obj = obj.members[part]
        except (KeyError, AttributeError):
            return None
    return ".".join([path, *parts])
