"""Checking the URLs a caller gives (base URL, token URL) before anything is sent."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

from ._exceptions import InvalidInputError

__all__ = ["check_url", "is_loopback"]

_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#]*@")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: object, *, what: str = "base_url", allow_insecure_http: bool = False) -> str:
    """Validate an http(s) URL and return it without a trailing slash.

    ``http://`` is refused except for loopback hosts (the fake EnKash), unless
    ``allow_insecure_http`` is set: bearer tokens must not cross a network in clear.
    """
    if not isinstance(url, str) or not url:
        raise InvalidInputError(f"{what} must be a non-empty string such as 'https://uat.example.com'")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidInputError(f"{what} must not contain whitespace or control characters")
    shown = repr(_USERINFO.sub(r"\1<redacted>@", url))  # never echo a password given in the URL
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise InvalidInputError(f"{what} must not carry credentials; pass them to the auth provider")
        port = parts.port  # raises ValueError for a port out of 0-65535 or not a number
    except ValueError as exc:
        if isinstance(exc, InvalidInputError):
            raise
        port = -1
    if port == -1:  # raised outside the handler: urllib's error (it may quote the URL) is not in the chain
        raise InvalidInputError(f"{what} {shown} is not a valid URL: the port must be a number from 1 to 65535")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(f"{what} must be an http(s) URL with a host, not {shown}")
    if port == 0:
        raise InvalidInputError(f"{what} {shown} has port 0")
    if parts.query or parts.fragment or "?" in url or "#" in url:  # even empty: paths would follow the '?'/'#'
        raise InvalidInputError(f"{what} must not have a query string or fragment")
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(parts.hostname):
        raise InvalidInputError(
            f"refusing plain http:// to non-loopback host {parts.hostname!r}: tokens would travel "
            "unencrypted. Use https://, or pass allow_insecure_http=True if you really mean it"
        )
    return url.rstrip("/")
