"""Training defaults that follow the data: batch size, learning rate and length.

A fixed recipe (batch 128, lr 0.05, 20 epochs) gives 80 optimizer steps to a
job with 500 labels, far too few, and batches bigger than whole classes. When a
job leaves ``training.batch_size``, ``lr`` or ``epochs`` out, the trainer sets
them from the number ``n`` of labeled training inputs it ends up with (after
``classes``, ``train_subset`` and the validation split):

- batch size ``clamp(n // 8, 8, 128)``: an epoch has at least 8 steps;
- learning rate scaled linearly with the batch (Goyal et al. 2017):
  ``0.05 * batch / 128`` for SGD, ``0.001 * batch / 128`` for AdamW;
- epochs ``clamp(ceil(STEP_BUDGET / steps_per_epoch), 20, 1000)``: at least
  ``STEP_BUDGET`` optimizer steps, and never fewer epochs than v1's 20.

The spec the trainer writes (``spec.json``) records the values chosen; values
a job gives are kept as they are.
"""

from __future__ import annotations

import math

BATCH_FRACTION = 8  # the batch is at most an eighth of the labeled set
MIN_BATCH, MAX_BATCH = 8, 128
BASE_LR = {"sgd": 0.05, "adamw": 0.001}  # at batch 128
BASE_BATCH = 128
STEP_BUDGET = 2000
MIN_EPOCHS, MAX_EPOCHS = 20, 1000


def batch_size_for(labeled: int) -> int:
    return max(MIN_BATCH, min(MAX_BATCH, labeled // BATCH_FRACTION))


def lr_for(optimizer: str, batch_size: int) -> float:
    return BASE_LR[optimizer] * batch_size / BASE_BATCH


def epochs_for(labeled: int, batch_size: int) -> int:
    steps_per_epoch = max(1, math.ceil(labeled / batch_size))
    return max(MIN_EPOCHS, min(MAX_EPOCHS, math.ceil(STEP_BUDGET / steps_per_epoch)))
