"""genapi: a dynamic API gateway over WebSockets speaking the Phoenix Channels protocol."""

from genapi.request.hooks import Reject
from genapi.structs import FunConfig, Request, Response

__all__ = ["FunConfig", "Reject", "Request", "Response"]
__version__ = "0.1.0"
