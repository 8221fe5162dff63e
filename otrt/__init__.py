"""otrt: representation transfer by optimal transport, as a service (CLI and client).

``otrt.Client`` is the Python SDK; importing it imports httpx, never torch.
"""

__version__ = "0.1.0"

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
