"""The public surface: one sorted export list, typed package, documented errors."""

from __future__ import annotations

import importlib.resources

import enkash_coins
from enkash_coins import (
    APIError,
    ConnectError,
    EnKashError,
    HTTPStatusError,
    InvalidInputError,
    RequestTimeoutError,
    ServerError,
    TransportError,
)


def test_all_is_sorted_and_every_name_exists() -> None:
    names = enkash_coins.__all__
    assert names == sorted(names)
    for name in names:
        assert hasattr(enkash_coins, name), name


def test_package_ships_py_typed() -> None:
    assert importlib.resources.files("enkash_coins").joinpath("py.typed").is_file()


def test_transport_and_api_errors_are_separate_branches_under_one_root() -> None:
    for cls in (APIError, HTTPStatusError, TransportError, InvalidInputError):
        assert issubclass(cls, EnKashError)
    assert issubclass(ConnectError, TransportError)
    assert issubclass(RequestTimeoutError, TransportError)
    assert not issubclass(ServerError, TransportError)
    assert not issubclass(TransportError, HTTPStatusError)
    assert not issubclass(APIError, HTTPStatusError)
    assert issubclass(InvalidInputError, ValueError)


def test_importing_the_sdk_loads_no_test_double_and_no_web_server() -> None:
    """The fake and aiohttp.web load only when asked for (the old top-level names keep working, lazily)."""
    import subprocess
    import sys

    code = ("import sys, enkash_coins; "
            "print(sorted(m for m in sys.modules if m == 'aiohttp.web' or m.startswith('enkash_coins.testing'))); "
            "enkash_coins.FakeEnKash; "
            "print('enkash_coins.testing' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.splitlines() == ["[]", "True"], out.stdout + out.stderr
