"""The transport seam: a request value in, a response value out."""

from ._aiohttp import AiohttpTransport
from ._base import Request, Response, Transport
from ._memory import InMemoryTransport

__all__ = ["AiohttpTransport", "InMemoryTransport", "Request", "Response", "Transport"]
