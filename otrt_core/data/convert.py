"""Converting a registered dataset's source into its snapshot of shards, once.

``python -m otrt_core.data.convert REQUEST.json --out DIR`` runs in a child of
the worker with its memory bounded, reads the source record by record (never a
whole dataset: one image's bytes at a time), and prints its progress as
:mod:`otrt_core.protocol` events, one JSON line each. For each record it:

1. reads the image's header and refuses it past ``max_image_pixels`` before
   decoding anything (a decompression bomb costs nothing);
2. decodes it fully (a truncated file is caught here, not in training), with
   EXIF orientation applied and every mode mapped to grey or RGB;
3. stores it: the original bytes when they are already a plain upright JPEG no
   larger than :data:`STORED_SIDE` on its short side, else re-encoded (JPEG for
   lossy sources, PNG for lossless ones) with the short side capped, so that a
   training step never decodes a 12-megapixel photo;
4. counts it (classes per split, sizes, modes, per-channel pixel statistics of
   the training images, from a small thumbnail).

Unreadable files are skipped and listed with their reason. Whole-dataset
problems (no images, one class) end the run with an ``invalid_input`` error.

Resuming: after each completed shard, ``conversion.json`` records how many
records were consumed and everything counted so far (written atomically). A
run started again on the same directory skips the consumed records (without
reading them) and goes on; a half-written shard is written again.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from otrt_core import protocol
from otrt_core.data.decode import Unreadable, decode, header
from otrt_core.data.formats import Layout, detect, records
from otrt_core.data.shard_writer import SHARD_BYTES, ShardIndex, ShardInfo, ShardWriter
from otrt_core.data.sources import Source, SourceRefused, SourceUnavailable, ZipSource, open_source
from otrt_core.errors import UserError

STORED_SIDE = 512  # the short side images are stored at, at most
STORED_LONG_SIDE = 2048  # and the long side
STATS_SIDE = 32  # thumbnails the pixel statistics are taken from
LISTED_UNREADABLE = 100  # unreadable files named in the dataset's resource
SIZES_KEPT = 20_000  # image sizes kept for the median
PROGRESS_EVERY = 200  # records between progress lines
STATE = "conversion.json"
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
LOSSY_FORMATS = frozenset({"JPEG", "MPO", "WEBP"})


@dataclass(frozen=True)
class Request:
    """What to convert: ``source`` (a URI, or ``upload`` for a local copy of an uploaded
    zip), the ``format`` (or "auto"), and the limits of this service."""

    source: str
    format: str = "auto"
    upload: str | None = None  # the local path of an uploaded .zip
    allowed: list[str] = field(default_factory=list)
    s3_endpoint_url: str | None = None
    max_image_pixels: int = 64_000_000
    max_unreadable_fraction: float = 0.1
    shard_bytes: int = SHARD_BYTES


@dataclass
class Tally:
    """What the conversion has counted so far; saved with each completed shard."""

    position: int = 0  # records consumed
    shards: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    unreadable: int = 0
    unreadable_files: list[dict[str, str]] = field(default_factory=list)
    sizes: list[list[int]] = field(default_factory=list)  # [h, w] of the first SIZES_KEPT
    min_size: list[int] | None = None
    max_size: list[int] | None = None
    modes: list[str] = field(default_factory=list)
    bytes: int = 0  # of the stored images
    # Per channel (RGB) of the training images: sums of x and x^2, and the pixel count.
    pixel_sums: list[float] = field(default_factory=lambda: [0.0] * 6)
    pixels: int = 0
    digest: str = ""  # running sha256 chain of the records' keys and contents

    def unreadable_file(self, key: str, reason: str) -> None:
        self.unreadable += 1
        if len(self.unreadable_files) < LISTED_UNREADABLE:
            self.unreadable_files.append({"name": key, "reason": reason})

    def image(self, split: str, label: str, height: int, width: int, mode: str) -> None:
        per_split = self.counts.setdefault(split, {})
        per_split[label] = per_split.get(label, 0) + 1
        if len(self.sizes) < SIZES_KEPT:
            self.sizes.append([height, width])
        self.min_size = _by_area(self.min_size, [height, width], min)
        self.max_size = _by_area(self.max_size, [height, width], max)
        if mode not in self.modes:
            self.modes.append(mode)

    def save(self, path: Path) -> None:
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(json.dumps(asdict(self)))
        os.replace(temp, path)


def _by_area(current: list[int] | None, size: list[int], pick) -> list[int]:
    """The smaller or the larger (``pick``: min or max) of two ``[h, w]`` images by pixel
    count: a real image's size, where per axis photos of 1600x1200 and 3000x4000 gave
    1200x1200 and 4000x4000."""
    return size if current is None else pick(current, size, key=lambda hw: hw[0] * hw[1])


Emit = Any  # a callable taking a protocol event


def convert(request: Request, out_dir: Path, emit: Emit) -> dict[str, Any]:
    """Writes the snapshot under ``out_dir`` (shards and ``index.json``); returns its
    details (API.md's dataset fields). ``UserError`` for a dataset that cannot be used."""
    out_dir.mkdir(parents=True, exist_ok=True)
    source = _source(request)
    emit(protocol.Converting(phase="listing", done=0, total=None, unreadable=0))
    objects = list(source.list())
    format = detect(objects) if request.format == "auto" else request.format
    if format == "npz":
        raise UserError(
            "an .npz is used as it is: name its file_… id in dataset.name (no registration)",
            ("source",),
        )
    layout = records(source, "imagefolder" if format == "zip" else format)
    state_path = out_dir / STATE
    tally = Tally(**json.loads(state_path.read_text())) if state_path.exists() else Tally()
    total = len(objects) if format in ("imagefolder", "zip") else None
    _write_shards(layout, request, out_dir, tally, total, emit)
    return _finish(layout, format, request, out_dir, tally)


def _source(request: Request) -> Source:
    try:
        if request.upload is not None:
            return ZipSource(Path(request.upload))
        return open_source(request.source, request.allowed, s3_endpoint_url=request.s3_endpoint_url)
    except (SourceRefused, SourceUnavailable) as error:
        raise UserError(str(error), ("source",)) from None


def _write_shards(
    layout: Layout, request: Request, out_dir: Path, tally: Tally, total: int | None, emit: Emit
) -> None:
    """Stores every record after ``tally.position`` in shards. When a shard completes,
    every open shard is completed too and the tally saved: a clean cut to resume from."""
    writers: dict[str, ShardWriter] = {}
    resumed_at = tally.position
    emit(_progress(tally, total))  # where this run starts: 0, or where an earlier one stopped
    for position, record in enumerate(layout.records):
        if position < resumed_at:
            continue  # stored by an earlier run
        stored = _stored(record, request, tally, layout.classes)
        completed = None
        if stored is not None:
            if record.split not in writers:
                done = sum(shard["split"] == record.split for shard in tally.shards)
                writers[record.split] = ShardWriter(
                    out_dir, record.split, done, request.shard_bytes
                )
            completed = writers[record.split].add(*stored)
        tally.position = position + 1
        if completed is not None:
            tally.shards.append(asdict(completed))
            _cut(writers, tally)
            tally.save(out_dir / STATE)
        if tally.position % PROGRESS_EVERY == 0:
            emit(_progress(tally, total))
    _cut(writers, tally)
    tally.save(out_dir / STATE)
    emit(_progress(tally, total))


def _cut(writers: dict[str, ShardWriter], tally: Tally) -> None:
    """Completes every open shard."""
    for writer in writers.values():
        info = writer.close()
        if info is not None:
            tally.shards.append(asdict(info))


def _progress(tally: Tally, total: int | None) -> protocol.Converting:
    return protocol.Converting(
        phase="converting", done=tally.position, total=total, unreadable=tally.unreadable
    )


def _stored(
    record, request: Request, tally: Tally, classes: list[str]
) -> tuple[str, bytes, str, int] | None:
    """The record as a shard takes it (key, image bytes, suffix, label), counted; ``None``
    (and listed as unreadable) when it cannot be read."""
    try:
        data = record.read()
        head = header(data, request.max_image_pixels)
        image = decode(data, max_pixels=request.max_image_pixels)
    except Unreadable as error:
        tally.unreadable_file(record.key, error.reason)
        return None
    except (OSError, SourceUnavailable) as error:  # the source failed to give this object
        tally.unreadable_file(record.key, f"could not be read: {error}")
        return None
    grey = head.mode in GREY_MODES
    image = image.convert("L") if grey else image
    label_name = classes[record.label] if record.label is not None else "unlabeled"
    tally.image(record.split, label_name, image.height, image.width, head.mode)
    if record.split == "train":
        _add_statistics(tally, image)
    payload, suffix = _payload(data, head, image)
    tally.bytes += len(payload)
    tally.digest = hashlib.sha256(
        f"{tally.digest}{record.key}".encode() + hashlib.sha256(payload).digest()
    ).hexdigest()
    key = f"{tally.position:09d}"
    return key, payload, suffix, -1 if record.label is None else record.label


def _payload(data: bytes, head, image) -> tuple[bytes, str]:
    """The bytes a shard stores: the original upright baseline JPEG when small enough,
    else the decoded image re-encoded with its short side capped."""
    short, long = min(image.size), max(image.size)
    small = short <= STORED_SIDE and long <= STORED_LONG_SIDE
    upright = head.orientation == 1
    if head.format == "JPEG" and head.mode in ("L", "RGB") and small and upright:
        return data, "jpg"
    if not small:
        scale = min(STORED_SIDE / short, STORED_LONG_SIDE / long)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, resample=3, reducing_gap=3.0)  # bicubic
    buffer = io.BytesIO()
    if head.format in LOSSY_FORMATS:
        image.save(buffer, format="JPEG", quality=93)
        return buffer.getvalue(), "jpg"
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue(), "png"


def _add_statistics(tally: Tally, image) -> None:
    """Adds a thumbnail's per-channel sums (as RGB, values in [0, 1]) to the tally."""
    thumbnail = image.convert("RGB")
    thumbnail.thumbnail((STATS_SIDE, STATS_SIDE))
    pixels = np.asarray(thumbnail, dtype=np.float64).reshape(-1, 3) / 255.0
    sums = [*pixels.sum(axis=0), *(pixels**2).sum(axis=0)]
    tally.pixel_sums = [a + b for a, b in zip(tally.pixel_sums, sums, strict=True)]
    tally.pixels += len(pixels)


def _finish(
    layout: Layout, format: str, request: Request, out_dir: Path, tally: Tally
) -> dict[str, Any]:
    """Checks what was found, writes ``index.json`` and returns the dataset's details."""
    for key, reason in layout.problems:
        tally.unreadable_file(key, reason)
    readable = sum(sum(per_split.values()) for per_split in tally.counts.values())
    seen = readable + tally.unreadable
    if readable == 0:
        raise UserError("the source holds no readable image", ("source",))
    if tally.unreadable > request.max_unreadable_fraction * seen:
        raise UserError(
            f"{tally.unreadable} of {seen} files are unreadable, past the limit of "
            f"{request.max_unreadable_fraction:.0%} (the first: "
            f"{tally.unreadable_files[0]['name']}: {tally.unreadable_files[0]['reason']})",
            ("source",),
        )
    if "train" not in tally.counts and "unlabeled" not in tally.counts:
        raise UserError("the source has no training images (train/ or class folders)")
    grey = all(mode in GREY_MODES for mode in tally.modes)
    mean, std = _statistics(tally, grey)
    shards = [ShardInfo(**shard) for shard in tally.shards]
    sizes = sorted(tally.sizes, key=lambda hw: hw[0] * hw[1])
    index = ShardIndex(layout.classes, 1 if grey else 3, mean, std, sizes[len(sizes) // 2], shards)
    index.write(out_dir)
    return {
        "format": format,
        "classes": layout.classes,
        "counts": tally.counts,
        "images": {
            "min": tally.min_size,
            "median": sizes[len(sizes) // 2],
            "max": tally.max_size,
            "modes": sorted(tally.modes),
        },
        "bytes": tally.bytes,
        "unreadable": {"count": tally.unreadable, "files": tally.unreadable_files},
        "fingerprint": f"sha256:{tally.digest}",
        "channels": index.channels,
        "shards": len(shards),
    }


def _statistics(tally: Tally, grey: bool) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training pixels (one channel for grey data)."""
    count = max(tally.pixels, 1)
    mean = np.array(tally.pixel_sums[:3]) / count
    std = np.sqrt(np.maximum(np.array(tally.pixel_sums[3:]) / count - mean**2, 0.0)) + 1e-6
    if grey:
        return [float(mean[0])], [float(std[0])]
    return mean.tolist(), std.tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m otrt_core.data.convert")
    parser.add_argument("request", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--stop-on-stdin-eof",
        action="store_true",
        help="Exit when stdin closes: the worker that started it has died.",
    )
    args = parser.parse_args(argv)
    request = Request(**json.loads(args.request.read_text()))
    if args.stop_on_stdin_eof:
        threading.Thread(target=_exit_at_eof, daemon=True).start()

    def emit(event) -> None:
        print(json.dumps(protocol.event_line(event)), flush=True)

    try:
        details = convert(request, args.out, emit)
    except UserError as error:
        emit(protocol.Error(code=protocol.INVALID_INPUT, message=error.message))
        return protocol.EXIT_INVALID
    emit(protocol.Converted(details=details))
    return protocol.EXIT_OK


def _exit_at_eof() -> None:
    """Ends the process once stdin closes. What it wrote stays consistent (shards and the
    tally are renamed into place whole): the next attempt resumes from it."""
    descriptor = sys.stdin.fileno()
    while os.read(descriptor, 1 << 16):  # the raw descriptor: no lock held at shutdown
        pass
    os._exit(protocol.EXIT_STOPPED)


if __name__ == "__main__":
    sys.exit(main())
