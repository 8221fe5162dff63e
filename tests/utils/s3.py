"""A real S3 API on this machine: moto's standalone server, started like any other service.

MinIO's server cannot be installed here; moto's (``moto[server]``) answers the
same HTTP API, multipart uploads and ranges included, from memory.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx

from tests.utils.guards import missing
from tests.utils.processes import free_port

# moto takes any credentials unless told to check them (``check_credentials``).
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "otrt-test",
    "AWS_SECRET_ACCESS_KEY": "otrt-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    url: str
    process: subprocess.Popen


@contextmanager
def s3_server(
    log: Path, *, check_credentials: bool = False, port: int | None = None
) -> Iterator[S3Server]:
    """A moto S3 server on ``port`` (default: a free one); yields it and kills it at the end.

    ``check_credentials``: every request must be signed by an IAM user of the
    server's (there are none, so every key is refused), as a real store does.
    """
    for name, value in CREDENTIALS.items():  # for this process's clients and its children's
        os.environ.setdefault(name, value)
    command = shutil.which("moto_server")
    if command is None:
        missing("moto's server is not installed (pip install 'moto[server]')")
    port = port or free_port()
    env = os.environ | ({"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if check_credentials else {})
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [command, "-H", "127.0.0.1", "-p", str(port)], stdout=output, stderr=output, env=env
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    missing(f"moto's server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield S3Server(url, process)
    finally:
        process.kill()
        process.wait()


def new_bucket(endpoint: str) -> str:
    """A fresh bucket on ``endpoint``; returns its name."""
    name = f"otrt-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


def keys_in(endpoint: str, bucket: str) -> list[str]:
    """Every object key in ``bucket``."""
    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listing.get("Contents", [])]
