"""otrt: representation transfer by optimal transport, as a service (CLI and client)."""

__version__ = "0.1.0"
