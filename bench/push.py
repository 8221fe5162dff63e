"""``otrt datasets push`` MB/s for a folder of photos, against a plain boto3 upload of the
same folder to the same S3 server (moto's).

The folder: ``--photos`` camera-sized JPEGs (sides drawn in ``--sizes``, default
1500-4000 px, a few hundred kB each; tests/utils/images.py's ``photo_tree``, 2 classes).
The store: moto's S3 server, and an ``otrt serve`` on it (``OTRT_STORAGE_URL=
s3://bench/otrt``, ``OTRT_S3_ENDPOINT_URL`` moto's). Three uploads of the folder are
timed, interleaved round by round, the median of ``--rounds`` reported:

- ``otrt_push``: ``Client.push_dataset(folder, part_size=16 MiB, parallel=4)`` to its
  return, on a service with ``OTRT_S3_PRESIGN=on``: packing the folder as one
  uncompressed zip on disk and its sha256, the parts PUT straight to S3 at their
  presigned URLs, the upload's completion (S3 joins the parts; the service reads the
  whole once, to hash and inspect it) and the dataset's registration; not the
  conversion the registration starts (a worker's, after the return);
- ``otrt_push_through_service``: the same, on a second service with presigning off:
  each part through the service's part route into the same kind of S3 multipart upload;
- ``boto3_files``: ``upload_file`` of every file of the folder, 4 files at a time
  (a ThreadPoolExecutor over the files), boto3's default TransferConfig;
- ``boto3_zip``: ``upload_file`` of the same zip (made once, outside the timing),
  boto3's default TransferConfig (8 MB parts, 10 threads, past 8 MB).

MB/s are 10^6 bytes a second: the zip's bytes for ``otrt_push`` and ``boto3_zip``, the
files' for ``boto3_files``. The ratios are push's MB/s over the others'. Between
rounds, the registered dataset's conversion is waited for and everything uploaded is
deleted, untimed; by default the service refuses every image before decoding it
(``OTRT_MAX_IMAGE_PIXELS=1``, so the conversion fails in seconds instead of taking
the cores for minutes; ``--convert`` converts for real). Also reported: the seconds to
zip the folder and hash the zip alone (the local part of push's time).

    python bench/push.py --photos 300 --rounds 3 --out bench/out/push.json

moto's server and the service share the machine's cores with the client (two here):
every figure is a lower bound, and the service's path (client -> service -> moto) pays
for two processes on the same cores where boto3 pays for one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
import httpx

from bench.report import publish
from otrt import Client
from otrt.push import file_sha256, zipped_tree
from tests.utils.images import photo_tree
from tests.utils.processes import free_port, wait_until_healthy
from tests.utils.s3 import s3_server

BUCKET = "bench"
MIB = 1024 * 1024


@contextlib.contextmanager
def otrt_serve(data_dir: Path, env: dict[str, str]):
    """``otrt serve`` on a free port, its output in ``data_dir``/serve.log; its URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "serve.log"
    port = free_port()
    env = os.environ | {"OTRT_TORCH_THREADS": "1", "OTRT_DATA_DIR": str(data_dir)} | env
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "otrt", "serve", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            wait_until_healthy(http, process, lambda: log.read_text(errors="replace")[-3000:])
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def delete_prefix(s3, prefix: str) -> None:
    """Every object under ``prefix`` of the bucket, gone."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs=2, default=[1500, 4000], help="Side range.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--part-size", type=int, default=16 * MIB)
    parser.add_argument("--parallel", type=int, default=4, help="Parts (push) or files at once.")
    parser.add_argument("--convert", action="store_true", help="Let the service convert.")
    parser.add_argument("--out", default="bench/out/push.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="otrt-push-bench-") as scratch:
        scratch = Path(scratch)
        os.environ["XDG_CACHE_HOME"] = str(scratch / "cache")  # push's resume records
        photos = scratch / "photos"
        started = time.perf_counter()
        photo_tree(photos, classes=2, per_class=args.photos // 2, sizes=tuple(args.sizes))
        generation_seconds = time.perf_counter() - started
        files = sorted(p for p in photos.rglob("*") if p.is_file())
        files_bytes = sum(p.stat().st_size for p in files)
        started = time.perf_counter()
        with zipped_tree(photos) as made:
            file_sha256(made)  # as push does
            zip_seconds = time.perf_counter() - started
            archive = scratch / "photos.zip"
            shutil.copyfile(made, archive)
        zip_bytes = archive.stat().st_size

        env = {} if args.convert else {"OTRT_MAX_IMAGE_PIXELS": "1"}
        with s3_server(scratch / "moto.log") as moto:
            s3 = boto3.client("s3", endpoint_url=moto.url)
            s3.create_bucket(Bucket=BUCKET)
            env |= {"OTRT_STORAGE_URL": f"s3://{BUCKET}/otrt", "OTRT_S3_ENDPOINT_URL": moto.url}
            presigned = env | {"OTRT_S3_PRESIGN": "on"}
            with (
                otrt_serve(scratch / "data", presigned) as url,
                otrt_serve(scratch / "data-proxy", env) as proxy_url,
                Client(url, timeout=300) as client,
                Client(proxy_url, timeout=300) as proxy_client,
            ):

                def otrt_push() -> None:
                    client.push_dataset(photos, part_size=args.part_size, parallel=args.parallel)

                def otrt_push_through_service() -> None:
                    proxy_client.push_dataset(
                        photos, part_size=args.part_size, parallel=args.parallel
                    )

                def boto3_files() -> None:
                    def send(path: Path) -> None:
                        s3.upload_file(str(path), BUCKET, f"files/{path.relative_to(photos)}")

                    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
                        list(pool.map(send, files))  # the first failure raises here

                def boto3_zip() -> None:
                    s3.upload_file(str(archive), BUCKET, "zip/photos.zip")

                methods = {
                    "otrt_push": otrt_push,
                    "otrt_push_through_service": otrt_push_through_service,
                    "boto3_files": boto3_files,
                    "boto3_zip": boto3_zip,
                }
                seconds: dict[str, list[float]] = {name: [] for name in methods}
                loads, conversions = [], []
                for _ in range(args.rounds):
                    for name, upload in methods.items():
                        started = time.perf_counter()
                        upload()
                        seconds[name].append(time.perf_counter() - started)
                        loads.append(os.getloadavg()[0])
                        conversions += clean_up(client, s3) + clean_up(proxy_client, s3)
                listing = s3.list_objects_v2(Bucket=BUCKET)
                left = [item["Key"] for item in listing.get("Contents", [])]
        medians = {name: statistics.median(values) for name, values in seconds.items()}
        sent_bytes = {name: zip_bytes for name in medians} | {"boto3_files": files_bytes}
        rates = {name: sent_bytes[name] / medians[name] / 1e6 for name in medians}
        report = {
            "photos": len(files),
            "sides": args.sizes,
            "files_bytes": files_bytes,
            "zip_bytes": zip_bytes,
            "part_size": args.part_size,
            "parallel": args.parallel,
            "rounds": args.rounds,
            "cores": len(os.sched_getaffinity(0)),
            "generation_seconds": generation_seconds,
            "zip_and_sha256_seconds": zip_seconds,
            "bytes": sent_bytes,
            "seconds": medians,
            "mb_per_second": rates,
            "push_over_boto3_files": rates["otrt_push"] / rates["boto3_files"],
            "push_over_boto3_zip": rates["otrt_push"] / rates["boto3_zip"],
            "push_through_service_over_boto3_files": (
                rates["otrt_push_through_service"] / rates["boto3_files"]
            ),
            "every_round_seconds": seconds,
            "service_converted": args.convert,
            "conversions_ended": conversions,
            "objects_left_in_bucket": left[:20],  # the service's own, after the clean-ups
            "load_average": {"min": min(loads), "max": max(loads)},
        }
    publish(report, args.out)


def clean_up(client: Client, s3) -> list[str]:
    """Waits for the conversions of the datasets pushed, deletes them and their uploads,
    and everything boto3 put; the statuses the datasets ended in (with the error)."""
    ended = []
    for dataset in list(client.registered_datasets()):
        dataset = client.wait_dataset(dataset["id"], timeout=900, poll_seconds=0.5)
        error = dataset.get("error") or {}
        ended.append(dataset["status"] + (f": {error.get('message')}" if error else ""))
        client.delete_dataset(dataset["id"])
        if str(dataset.get("source", "")).startswith("file_"):
            with contextlib.suppress(Exception):  # what is left only costs moto memory
                client.delete_file(dataset["source"])
    delete_prefix(s3, "files/")
    delete_prefix(s3, "zip/")
    return ended


if __name__ == "__main__":
    main()
