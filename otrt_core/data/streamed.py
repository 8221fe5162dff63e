"""A registered dataset's snapshot as batches: decoded per sample by DataLoader workers.

The split of the work:

- a :class:`~otrt_core.data.snapshot.Snapshot` gives every sample's label and
  image bytes by its number in a split, so choosing rows
  (:mod:`otrt_core.data.selection`) reads no image.
- :class:`Samples` decodes sample ``(row, seed)`` to a ``uint8`` ``(C, H, W)``
  tensor at ``image_size``: JPEGs decoded at reduced scale when the target is
  smaller (PIL's ``draft``); in training a random resized crop plus a flip
  drawn from the sample's own seed, in evaluation a resize of the short side
  plus a center crop. The seed travels with the row, so the views do not depend
  on which loader worker decodes which sample.
- :class:`EpochBatches` is the batch sampler: the epoch's order is a function of
  (seed, epoch) alone, shard-aware (shards shuffled, then samples shuffled within
  windows of :data:`SHUFFLE_WINDOW` shards, so a bounded shard cache suffices),
  and it can start at any batch. Resuming mid-epoch is starting at the next
  batch: the order does not depend on the number of loader workers, since a
  DataLoader with a batch sampler returns batches in the sampler's order.
  Under DDP each rank takes its share of every global batch.
- Batches are collated as ``uint8`` in pinned memory; the trainer copies them to
  the device with ``non_blocking=True`` and normalizes them there
  (:func:`to_device`), so no step waits on a host sync.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from otrt_core.data.snapshot import Snapshot

SHUFFLE_WINDOW = 4  # shards whose samples are shuffled together
CROP_SCALE = (0.08, 1.0)  # a random resized crop's area, as a fraction of the image's
CROP_RATIO = (3 / 4, 4 / 3)  # and its aspect ratio (torchvision's defaults)
CROP_TRIES = 10


@dataclass(frozen=True)
class Sample:
    """What a loader worker is asked for: a row of a split, and the seed of its view."""

    split: str
    row: int
    seed: int  # of the random crop and flip; unused in evaluation


@dataclass(frozen=True)
class RowTable:
    """Each sample's label and position among the job's rows, per split, as flat arrays
    indexed by the sample's number (-1 where the job does not use it). No Python object
    per sample: loader workers forked from the trainer share these pages instead of
    copying them (a garbage collection in a worker writes to every object it visits)."""

    labels: dict[str, np.ndarray]
    positions: dict[str, np.ndarray]

    @classmethod
    def of(cls, parts: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> RowTable:
        """From ``(split, rows, labels)`` parts, positions counted across them in order."""
        labels: dict[str, np.ndarray] = {}
        positions: dict[str, np.ndarray] = {}
        start = 0
        for split, rows, part_labels in parts:
            size = int(rows.max()) + 1 if len(rows) else 0
            for table, values in ((labels, part_labels), (positions, start + np.arange(len(rows)))):
                column = table.setdefault(split, np.full(size, -1, dtype=np.int64))
                if len(column) < size:
                    column = table[split] = np.concatenate(
                        [column, np.full(size - len(column), -1, dtype=np.int64)]
                    )
                column[rows] = values
            start += len(rows)
        return cls(labels, positions)

    def __len__(self) -> int:
        return sum(int((column >= 0).sum()) for column in self.positions.values())

    def lookup(self, split: str, row: int) -> tuple[int, int]:
        """``(label, position)`` of a sample; ``(-1, -1)`` for one the job does not use."""
        column = self.positions.get(split)
        if column is None or row >= len(column) or column[row] < 0:
            return -1, -1
        return int(self.labels[split][row]), int(column[row])


class Samples(Dataset):
    """Sample -> ``(uint8 (C, H, W) tensor, label, position)``, decoded and sized for the
    job; ``position`` is the sample's place among the job's rows of its part (what the
    teacher cache and the device augmentations are keyed by)."""

    def __init__(
        self,
        snapshot: Snapshot,
        rows: RowTable,
        size: tuple[int, int],
        channels: int,
        train: bool,
    ) -> None:
        self.snapshot, self.size = snapshot, size
        self.rows = rows
        self.mode = "L" if channels == 1 else "RGB"
        self.train = train

    def __getitem__(self, sample: Sample) -> tuple[Tensor, int, int]:
        image = Image.open(io.BytesIO(self.snapshot.image(sample.split, sample.row)))
        height, width = self.size
        if image.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when that is enough
            image.draft(self.mode, (width, height))
        image = image.convert(self.mode)
        if self.train:
            image = random_resized_crop(image, self.size, random.Random(sample.seed))
        else:
            image = resize_center_crop(image, self.size)
        array = np.asarray(image, dtype=np.uint8)
        tensor = torch.from_numpy(array.copy()).view(height, width, -1).permute(2, 0, 1)
        return tensor, *self.rows.lookup(sample.split, sample.row)

    def __len__(self) -> int:  # the sampler decides what is read
        return len(self.rows)


def random_resized_crop(
    image: Image.Image, size: tuple[int, int], rng: random.Random
) -> Image.Image:
    """A crop of random area (:data:`CROP_SCALE`) and aspect ratio (:data:`CROP_RATIO`),
    resized to ``size`` (h, w), flipped left-right half the time; the whole image when
    no drawn crop fits (as torchvision's ``RandomResizedCrop``)."""
    width, height = image.size
    area = width * height
    box = (0, 0, width, height)
    for _ in range(CROP_TRIES):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            box = (left, top, left + w, top + h)
            break
    crop = image.resize((size[1], size[0]), Image.Resampling.BILINEAR, box=box)
    return crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop


def resize_center_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resized to cover ``size`` (h, w) with its aspect ratio kept, then center-cropped."""
    width, height = image.size
    scale = max(size[1] / width, size[0] / height)
    w, h = max(size[1], round(width * scale)), max(size[0], round(height * scale))
    left, top = (w - size[1]) // 2, (h - size[0]) // 2
    resized = image.resize((w, h), Image.Resampling.BILINEAR)
    return resized.crop((left, top, left + size[1], top + size[0]))


class EpochBatches:
    """The batches of one epoch over ``rows`` of ``split``, from batch ``start`` on.

    The order is a function of (``seed``, ``epoch``): the rows' shards in a random
    order, then the rows of each window of :data:`SHUFFLE_WINDOW` shards shuffled
    together. Each batch of ``batch_size`` rows is one global batch; with several
    ranks this sampler yields rank ``rank``'s share (every ``world``-th row).
    """

    def __init__(
        self,
        snapshot: Snapshot,
        split: str,
        rows: np.ndarray,
        *,
        batch_size: int,
        seed: int,
        epoch: int,
        start: int = 0,
        rank: int = 0,
        world: int = 1,
        shuffle: bool = True,
    ) -> None:
        self.split, self.batch_size, self.start = split, batch_size, start
        self.rank, self.world, self.epoch_seed = rank, world, (seed * 1_000_003 + epoch)
        self.order = shard_order(snapshot, split, rows, self.epoch_seed) if shuffle else rows

    def __len__(self) -> int:
        return max(0, math.ceil(len(self.order) / self.batch_size) - self.start)

    def __iter__(self) -> Iterator[list[Sample]]:
        for batch in range(self.start, self.start + len(self)):
            rows = self.order[batch * self.batch_size : (batch + 1) * self.batch_size]
            positions = range(batch * self.batch_size, batch * self.batch_size + len(rows))
            samples = [
                Sample(self.split, int(row), _sample_seed(self.epoch_seed, position))
                for row, position in zip(rows, positions, strict=True)
            ]
            # A last batch shorter than the ranks is cycled: every rank gets a row.
            cycled = [samples[i % len(samples)] for i in range(max(len(samples), self.world))]
            yield cycled[self.rank :: self.world]


def shard_order(snapshot: Snapshot, split: str, rows: np.ndarray, seed: int) -> np.ndarray:
    """``rows`` shuffled shard-aware: shards in a seeded order, rows shuffled per window."""
    rng = np.random.default_rng(seed)
    shards = snapshot.shard_of(split, rows)
    present = rng.permutation(np.unique(shards))
    ordered = []
    for start in range(0, len(present), SHUFFLE_WINDOW):
        window = rows[np.isin(shards, present[start : start + SHUFFLE_WINDOW])]
        ordered.append(rng.permutation(window))
    return np.concatenate(ordered) if ordered else rows


def _sample_seed(epoch_seed: int, position: int) -> int:
    return (epoch_seed * 2_654_435_761 + position) % (2**63 - 1)


def loader(
    samples: Samples, batches: Iterator[list[Sample]] | Sequence, workers: int, pin: bool
) -> DataLoader:
    """A DataLoader over ``batches`` (a batch sampler): batches come back in its order."""
    return DataLoader(
        samples,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
        collate_fn=_collate,
    )


def _collate(items: list[tuple[Tensor, int, int]]) -> tuple[Tensor, Tensor, Tensor]:
    """``(uint8 inputs, labels, positions)`` of a batch."""
    return (
        torch.stack([x for x, _, _ in items]),
        torch.tensor([y for _, y, _ in items]),
        torch.tensor([p for _, _, p in items]),
    )


def to_device(x: Tensor, device: torch.device, mean: Tensor, std: Tensor) -> Tensor:
    """A ``uint8`` batch as normalized float32 on ``device`` (the copy does not block)."""
    x = x.to(device, non_blocking=True).float().div_(255.0)
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
