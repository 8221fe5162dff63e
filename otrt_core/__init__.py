"""otrt's library: OT distance, models, data and training; knows no HTTP, DB or queue."""

__version__ = "0.1.0"  # pyproject.toml's; the API and the SDK say it
