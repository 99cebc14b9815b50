"""The transport seam: a request value in, a response value out."""

from ._aiohttp import AiohttpTransport
from ._base import Request, Response, Transport

__all__ = ["AiohttpTransport", "Request", "Response", "Transport"]
