"""A registered dataset as a job's data: the rows it uses, in memory or streamed.

The rows come from the labels in the snapshot's index alone
(:mod:`otrt_core.data.selection`): a ``test/`` split when the source has one,
else 15% of the training images (a fixed seed, as uploads); a ``val/`` split
when the source has one, else ``val_fraction`` of the training rows.

Then one of two paths (API.md v1.2, DESIGN.md round 3), said by the ``start``
event's ``data_path``:

- ``memory``: every row decoded once (the evaluation view at ``image_size``)
  fits ``in_memory_bytes`` as float32: the inputs become tensors and the job
  runs as on a built-in dataset (on the device, augmented there);
- ``streamed``: the inputs stay in the shards. Training batches come from
  DataLoader workers (:class:`TrainStream`); validation and test inputs are
  :class:`StreamedInputs`, decoded a batch at a time when read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from otrt_core.data.catalog import TEST_SPLIT_SEED
from otrt_core.data.selection import keep_classes, select, stratified_mask
from otrt_core.data.snapshot import Snapshot
from otrt_core.data.splits import PreparedData
from otrt_core.data.streamed import EpochBatches, RowTable, Sample, Samples, loader, to_device
from otrt_core.errors import UserError
from otrt_core.spec import JobSpec

TEST_FRACTION = 0.15  # of the training images, held out when the source has no test/
FLOAT32 = 4
DATASET_LOC = ("dataset", "name")
POOL_LOC = ("dataset", "unlabeled")


@dataclass(frozen=True)
class Rows:
    """Rows of one split of the snapshot, with their (relabelled) labels."""

    split: str
    rows: np.ndarray
    labels: np.ndarray

    def by_sample(self) -> RowTable:
        """Each row's label and position, as :class:`~otrt_core.data.streamed.Samples`
        reads them."""
        return RowTable.of([(self.split, self.rows, self.labels)])


class StreamedInputs:
    """A split's inputs, decoded on demand in the evaluation view and normalized.

    Enough of a tensor for the code that reads evaluation inputs: ``len``,
    ``shape``, slicing (decoded in this process) and :meth:`batches` (decoded by
    loader workers, in order).
    """

    def __init__(
        self,
        snapshot: Snapshot,
        part: Rows,
        size: tuple[int, int],
        channels: int,
        mean: Tensor,
        std: Tensor,
        workers: int,
    ) -> None:
        self.part, self.mean, self.std, self.workers = part, mean, std, workers
        self.samples = Samples(snapshot, part.by_sample(), size, channels, train=False)
        self.shape = torch.Size((len(part.rows), channels, *size))

    def __len__(self) -> int:
        return len(self.part.rows)

    def __getitem__(self, index: slice) -> Tensor:
        rows = self.part.rows[index]
        if len(rows) == 0:
            return torch.empty((0, *self.shape[1:]))
        images = torch.stack([self.samples[Sample(self.part.split, int(r), 0)][0] for r in rows])
        return to_device(images, torch.device("cpu"), self.mean, self.std)

    def batches(self, batch_size: int):
        """The inputs in order, ``batch_size`` at a time, as normalized CPU tensors."""
        order = [
            [Sample(self.part.split, int(r), 0) for r in self.part.rows[i : i + batch_size]]
            for i in range(0, len(self.part.rows), batch_size)
        ]
        for images, _, _ in loader(self.samples, order, self.workers, pin=False):
            yield to_device(images, torch.device("cpu"), self.mean, self.std)

    def decoded(self, batch_size: int = 256) -> Tensor:
        """Every input as one tensor (the in-memory path)."""
        if len(self) == 0:
            return torch.empty((0, *self.shape[1:]))
        return torch.cat(list(self.batches(batch_size)))


@dataclass
class TrainStream:
    """The training batches of a streamed run: an epoch's DataLoader from any batch on."""

    snapshot: Snapshot
    part: Rows
    samples: Samples
    seed: int
    workers: int
    pin: bool

    def epoch(self, epoch: int, start: int, batch_size: int, rank: int = 0, world: int = 1):
        """``(uint8 inputs, labels, positions)`` batches of ``epoch`` from batch ``start``
        on (this rank's share of each global batch of ``batch_size``); a position is the
        row's place among the job's training rows."""
        batches = EpochBatches(
            self.snapshot,
            self.part.split,
            self.part.rows,
            batch_size=batch_size,
            seed=self.seed,
            epoch=epoch,
            start=start,
            rank=rank,
            world=world,
        )
        return loader(self.samples, batches, self.workers, self.pin)


def job_rows(snapshot: Snapshot, spec: JobSpec) -> tuple[Rows, Rows, Rows, int]:
    """(train, val, test) rows and the class count of the job's selection."""
    dataset = spec.dataset
    train_labels = snapshot.labels("train")
    if len(train_labels) == 0:
        message = "this dataset has no labeled training images (it is an unlabeled pool)"
        raise UserError(message, DATASET_LOC)
    pool = np.arange(len(train_labels))
    if snapshot.index.count("test"):
        test_split, test_labels = "test", snapshot.labels("test")
        test_rows = np.arange(len(test_labels))
    else:
        held_out = stratified_mask(
            train_labels, TEST_FRACTION, np.random.default_rng(TEST_SPLIT_SEED)
        )
        test_split, test_rows, pool = "train", pool[held_out], pool[~held_out]
        test_labels = train_labels[test_rows]
    has_val = snapshot.index.count("val") > 0
    chosen = select(
        train_labels[pool],
        test_labels,
        classes=dataset.classes,
        train_subset=dataset.train_subset,
        val_fraction=dataset.val_fraction,
        seed=spec.training.seed,
        carve_val=not has_val,
    )
    train = Rows("train", pool[chosen.train], chosen.y_train)
    test = Rows(test_split, test_rows[chosen.test], chosen.y_test)
    if has_val:
        val_labels = snapshot.labels("val")
        rows, labels = (
            keep_classes(val_labels, dataset.classes)
            if dataset.classes is not None
            else (np.arange(len(val_labels)), val_labels)
        )
        val = Rows("val", rows, labels)
    else:
        val = Rows("train", pool[chosen.val], chosen.y_val)
    return train, val, test, chosen.num_classes


POOL_SPLITS = ("train", "val", "test", "unlabeled")


@dataclass
class PoolStream:
    """A registered pool too large to decode into memory, as unlabeled batches: each
    batch draws its rows with replacement, from a generator seeded by (seed, epoch,
    batch) (so a resumed run draws the same), decoded by loader workers in the view of
    the labeled data (``samples``: a random crop when the labeled data has one)."""

    samples: Samples  # every pool image, positions 0..len-1 in POOL_SPLITS order
    splits: list[str]
    split_of: np.ndarray  # position -> its split's index in ``splits``
    row_of: np.ndarray  # position -> its number in that split
    seed: int
    workers: int
    pin: bool

    def __len__(self) -> int:
        return len(self.row_of)

    def epoch(self, epoch: int, start: int, steps: int, size: int, rank: int, world: int):
        """``(uint8 inputs, labels (-1), positions)`` of batches ``start..steps-1``: this
        rank's share of each draw of ``size`` rows."""
        return loader(
            self.samples,
            self._draws(epoch, start, steps, size, rank, world),
            self.workers,
            self.pin,
        )

    def _draws(self, epoch: int, start: int, steps: int, size: int, rank: int, world: int):
        for batch in range(start, steps):
            rng = np.random.default_rng([self.seed, epoch, batch])
            drawn = rng.integers(len(self), size=max(size, world))
            yield [
                Sample(self.splits[self.split_of[p]], int(self.row_of[p]), int(rng.integers(2**62)))
                for p in drawn[rank::world]
            ]


def pool_inputs(
    snapshot: Snapshot,
    like: PreparedData,
    *,
    in_memory_bytes: int,
    workers: int,
    pin: bool,
    augment: bool,
    seed: int,
) -> Tensor | PoolStream:
    """Every image of ``snapshot`` (a registered pool: any labels ignored) in the view of
    the labeled data ``like``: its size and channels, normalized with its statistics.
    Decoded into memory beside labeled data held there when it fits ``in_memory_bytes``;
    streamed (:class:`PoolStream`) beside streamed labeled data. ``UserError`` when it
    fits neither."""
    channels, height, width = like.x_train.shape[1:]
    parts = [
        Rows(split, np.arange(count), np.zeros(count, dtype=np.int64))
        for split in POOL_SPLITS
        if (count := snapshot.index.count(split))
    ]
    images = sum(len(part.rows) for part in parts)
    if images == 0:
        raise UserError("the pool has no images", POOL_LOC)
    if like.streamed:
        unlabeled = [(part.split, part.rows, np.full(len(part.rows), -1)) for part in parts]
        table = RowTable.of(unlabeled)
        splits = [part.split for part in parts]
        split_of = np.concatenate([np.full(len(p.rows), i) for i, p in enumerate(parts)])
        row_of = np.concatenate([part.rows for part in parts])
        samples = Samples(snapshot, table, (height, width), channels, train=augment)
        return PoolStream(samples, splits, split_of, row_of, seed, workers, pin)
    decoded = images * channels * height * width * FLOAT32
    if decoded > in_memory_bytes:
        raise UserError(
            f"the pool's {images} images take {decoded / 2**20:.0f} MiB decoded at "
            f"{height}x{width}, past the in-memory limit of {in_memory_bytes / 2**20:.0f} MiB: "
            "a pool this large streams only beside a registered labeled dataset that streams; "
            "use fewer images or a smaller image_size",
            POOL_LOC,
        )
    return torch.cat(
        [
            StreamedInputs(
                snapshot, part, (height, width), channels, like.mean, like.std, workers
            ).decoded()
            for part in parts
        ]
    )


def load_registered(
    spec: JobSpec,
    snapshot: Snapshot,
    size: tuple[int, int],
    *,
    in_memory_bytes: int,
    workers: int,
    pin: bool,
) -> PreparedData:
    """The job's data on the memory path when it fits ``in_memory_bytes``, else streamed."""
    train, val, test, num_classes = job_rows(snapshot, spec)
    index = snapshot.index
    mean = torch.tensor(index.mean, dtype=torch.float32)
    std = torch.tensor(index.std, dtype=torch.float32)

    def inputs(part: Rows) -> StreamedInputs:
        return StreamedInputs(snapshot, part, size, index.channels, mean, std, workers)

    x_train, x_val, x_test = inputs(train), inputs(val), inputs(test)
    rows = len(train.rows) + len(val.rows) + len(test.rows)
    decoded = rows * index.channels * size[0] * size[1] * FLOAT32
    stream = None
    if decoded <= in_memory_bytes:
        x_train, x_val, x_test = x_train.decoded(), x_val.decoded(), x_test.decoded()
    else:
        augment = spec.dataset.augment == "standard"
        samples = Samples(snapshot, train.by_sample(), size, index.channels, train=augment)
        stream = TrainStream(snapshot, train, samples, spec.training.seed, workers, pin)

    def labels_of(part: Rows) -> Tensor:
        return torch.from_numpy(part.labels.astype(np.int64))

    return PreparedData(
        x_train=x_train,
        y_train=labels_of(train),
        x_val=x_val,
        y_val=labels_of(val),
        x_test=x_test,
        y_test=labels_of(test),
        x_unlabeled=torch.empty((0, index.channels, *size)),
        num_classes=num_classes,
        mean=mean,
        std=std,
        stream=stream,
    )
