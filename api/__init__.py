"""The HTTP API (FastAPI): routes per resource, thin over ``otrt_core.jobs.service``."""
