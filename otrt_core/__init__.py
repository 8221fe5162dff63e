"""otrt's library: OT distance, models, data and training; knows no HTTP, DB or queue."""
