"""otrt: representation transfer by optimal transport, as a service (CLI and client).

``otrt.Client`` is the Python SDK; importing it imports httpx, never torch.
"""

from otrt.client import (
    ApiError,
    Client,
    Conflict,
    Invalid,
    JobTimeout,
    NotFound,
    TooLarge,
    Unauthorized,
)
from otrt_core import __version__

__all__ = [
    "ApiError",
    "Client",
    "Conflict",
    "Invalid",
    "JobTimeout",
    "NotFound",
    "TooLarge",
    "Unauthorized",
    "__version__",
]
