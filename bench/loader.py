"""Loader throughput on generated JPEGs: otrt's streamed path against a plain torchvision
``ImageFolder`` + ``DataLoader``, against wids (WebDataset's indexed reader) on the same
shards, and otrt's path from moto's S3 server.

Every configuration reads the same images (``--images`` JPEGs of 200-800 px, median about
500, in 4 classes), decodes each to ``--size`` with the same training transform (random
resized crop and flip) with ``--workers`` loader workers, and is timed over one epoch,
the configurations interleaved round by round; the median of ``--rounds`` is reported,
with the load average, and the ratios to the ImageFolder baseline. Also: one core's
full-size JPEG decode rate (PIL, one process), the ceiling the decode-at-reduced-scale
path is measured against.

    python bench/loader.py --images 2000 --rounds 3 --out bench/out/loader.json

moto's server shares the two cores with the loader: its figure is a lower bound.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from bench.report import cpu_seconds, publish
from otrt_core.data.convert import Request, convert
from otrt_core.data.registered import TrainStream, job_rows
from otrt_core.data.shard_cache import ShardCache
from otrt_core.data.shard_reader import open_snapshot
from otrt_core.data.streamed import Samples, random_resized_crop
from otrt_core.spec import resolve_spec


def make_images(root: Path, count: int, seed: int = 0) -> None:
    """``root/train/class_k/n.jpg``: smooth random colour fields, 200-800 px a side."""
    rng = np.random.default_rng(seed)
    for n in range(count):
        folder = root / "train" / f"class_{n % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        height, width = (int(v) for v in rng.integers(200, 801, size=2))
        small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
        image.save(folder / f"{n:06d}.jpg", quality=90)


def torchvision_loader(root: Path, size: int, workers: int, batch: int) -> DataLoader:
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(size),
            transforms.RandomHorizontalFlip(),
            transforms.PILToTensor(),
        ]
    )
    folder = datasets.ImageFolder(root / "train", transform=transform)
    return DataLoader(folder, batch_size=batch, shuffle=True, num_workers=workers)


class WidsSamples(torch.utils.data.Dataset):
    """The same shards through wids, decoded and cropped as otrt's Samples does."""

    def __init__(self, shards: list[dict], size: int) -> None:
        import wids

        self.dataset = wids.ShardListDataset(shards, transformations=[])  # raw bytes
        self.size = (size, size)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        sample = self.dataset[index]
        stream = sample.get(".jpg") or sample.get(".png")
        image = Image.open(io.BytesIO(stream.read()))
        if image.format == "JPEG":
            image.draft("RGB", (self.size[1], self.size[0]))
        image = random_resized_crop(image.convert("RGB"), self.size, random.Random(index))
        array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
        return array.permute(2, 0, 1), int(sample[".cls"].read())


def otrt_stream(location: str, cache: Path, size: int, workers: int, endpoint=None):
    spec = resolve_spec(
        {
            "mode": "supervised",
            "student": {"architecture": "cnn_small"},
            "dataset": {"name": "ds_bench", "image_size": size, "val_fraction": 0.01},
            "training": {"batch_size": 64},
        }
    )
    snapshot = open_snapshot(location, ShardCache(cache, 4 << 30), endpoint)
    train, _, _, _ = job_rows(snapshot, spec)
    samples = Samples(snapshot, train.by_sample(), (size, size), 3, train=True)
    return TrainStream(snapshot, train, samples, seed=0, workers=workers, pin=False)


def timed(batches) -> tuple[float, int]:
    """Seconds to draw every batch, and the images drawn."""
    started, images = time.perf_counter(), 0
    for x, *_ in batches:  # (inputs, labels) or (inputs, labels, positions)
        images += len(x)
    return time.perf_counter() - started, images


def decode_rate(root: Path, count: int = 200) -> float:
    """Full-size JPEG decodes per second in this one process."""
    paths = sorted((root / "train").rglob("*.jpg"))[:count]
    data = [path.read_bytes() for path in paths]
    started = time.perf_counter()
    for raw in data:
        Image.open(io.BytesIO(raw)).convert("RGB")
    return len(data) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true", help="Skip moto's S3 server.")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "photos"
        make_images(root, args.images)
        snapshot = Path(scratch) / "snapshot"
        request = Request(source=root.as_uri() + "/", allowed=[Path(scratch).as_uri() + "/"])
        started = time.perf_counter()
        convert(request, snapshot, lambda event: None)
        conversion_seconds = time.perf_counter() - started
        shard_list = [
            {"url": str(path), "nsamples": _count(path)} for path in sorted(snapshot.glob("*.tar"))
        ]
        configs = {
            "torchvision_imagefolder": lambda: torchvision_loader(
                root, args.size, args.workers, 64
            ),
            "otrt_streamed_local": lambda: otrt_stream(
                str(snapshot), Path(scratch) / "cache", args.size, args.workers
            ).epoch(0, 0, 64),
            "wids_same_shards": lambda: DataLoader(
                WidsSamples(shard_list, args.size),
                batch_size=64,
                shuffle=True,
                num_workers=args.workers,
            ),
        }
        s3 = None if args.no_s3 else _s3_snapshot(snapshot, Path(scratch))
        if s3 is not None:
            configs["otrt_streamed_s3"] = lambda: otrt_stream(
                s3["location"], Path(scratch) / "s3-cache", args.size, args.workers, s3["url"]
            ).epoch(0, 0, 64)
        rates: dict[str, list[float]] = {name: [] for name in configs}
        loads, moto_share = [], []
        for _ in range(args.rounds):
            for name, make in configs.items():
                from_s3 = name == "otrt_streamed_s3"
                moto_before = cpu_seconds(s3["server_pid"]) if from_s3 else 0.0
                seconds, images = timed(make())
                rates[name].append(images / seconds)
                loads.append(os.getloadavg()[0])
                if from_s3:  # moto's CPU over the epoch, of all the cores
                    used = cpu_seconds(s3["server_pid"]) - moto_before
                    moto_share.append(used / (seconds * len(os.sched_getaffinity(0))))
        if s3 is not None:
            s3["server"].__exit__(None, None, None)
        medians = {name: statistics.median(values) for name, values in rates.items()}
        base = medians["torchvision_imagefolder"]
        report = {
            "images": args.images,
            "image_size": args.size,
            "loader_workers": args.workers,
            "cores": len(os.sched_getaffinity(0)),
            "conversion_seconds": conversion_seconds,
            "images_per_second": medians,
            "every_round": rates,
            "ratio_to_imagefolder": {name: rate / base for name, rate in medians.items()},
            "one_core_full_jpeg_decodes_per_second": decode_rate(root),
            "load_average": {"min": min(loads), "max": max(loads)},
        }
        if s3 is not None:
            report["s3_over_local"] = medians["otrt_streamed_s3"] / medians["otrt_streamed_local"]
            # The first round fetches every shard into the host's shard cache; later rounds
            # read it there (the cache is what a second epoch or job on the host reads).
            report["s3_over_local_by_round"] = [
                s3_rate / local
                for s3_rate, local in zip(
                    rates["otrt_streamed_s3"], rates["otrt_streamed_local"], strict=True
                )
            ]
            report["moto_share_of_the_cores_by_round"] = moto_share
    publish(report, args.out)


def _count(path: Path) -> int:
    import tarfile

    with tarfile.open(path) as tar:
        return sum(member.name.endswith(".cls") for member in tar)


def _s3_snapshot(snapshot: Path, scratch: Path) -> dict | None:
    """The snapshot uploaded to a moto server; None without moto."""
    import shutil

    if shutil.which("moto_server") is None:
        return None
    import boto3

    from tests.utils.s3 import s3_server

    server = s3_server(scratch / "moto.log")
    running = server.__enter__()
    client = boto3.client("s3", endpoint_url=running.url)
    client.create_bucket(Bucket="bench")
    for path in snapshot.iterdir():
        if path.is_file() and not path.name.startswith("."):
            client.upload_file(str(path), "bench", f"ds/{path.name}")
    os.environ["OTRT_S3_ENDPOINT_URL"] = running.url
    return {
        "location": "s3://bench/ds/",
        "url": running.url,
        "server": server,
        "server_pid": running.process.pid,
    }


if __name__ == "__main__":
    main()
