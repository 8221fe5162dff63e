"""prepare(): classes, validation split, labeled subset, normalization."""

import numpy as np
import pytest
import torch

from otrt_core.data import ArraySplits, prepare


def toy_arrays(per_class: int = 20, classes: int = 4) -> ArraySplits:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(classes), per_class)
    x = (3 + 2 * rng.standard_normal((len(y), 2, 3, 3)) + y[:, None, None, None]).astype(np.float32)
    return ArraySplits(x, y, x[:8].copy(), y[:8].copy())


def test_classes_are_kept_and_relabelled_in_the_listed_order():
    data = prepare(toy_arrays(), classes=[3, 1], train_subset=None, val_fraction=0.25, seed=0)
    assert data.num_classes == 2
    assert set(data.y_train.tolist()) == {0, 1}
    # class 3 became 0: its inputs are the larger ones (inputs grow with the label)
    assert data.x_train[data.y_train == 0].mean() > data.x_train[data.y_train == 1].mean()
    assert len(data.y_test) == 0 or set(data.y_test.tolist()) <= {0, 1}


def test_validation_split_is_stratified_and_seeded():
    data = prepare(toy_arrays(), classes=None, train_subset=None, val_fraction=0.25, seed=0)
    assert torch.bincount(data.y_val).tolist() == [5, 5, 5, 5]
    assert len(data.y_train) == 60
    again = prepare(toy_arrays(), classes=None, train_subset=None, val_fraction=0.25, seed=0)
    other = prepare(toy_arrays(), classes=None, train_subset=None, val_fraction=0.25, seed=1)
    torch.testing.assert_close(again.x_val, data.x_val)
    assert not torch.equal(other.x_val, data.x_val)


def test_train_subset_keeps_labels_per_class_and_pools_the_rest_unlabeled():
    data = prepare(toy_arrays(), classes=None, train_subset=3, val_fraction=0.25, seed=0)
    assert torch.bincount(data.y_train).tolist() == [3, 3, 3, 3]
    assert len(data.x_unlabeled) == 60 - 12
    assert (
        len(
            prepare(
                toy_arrays(), classes=None, train_subset=None, val_fraction=0.25, seed=0
            ).x_unlabeled
        )
        == 0
    )


def test_inputs_are_normalized_per_channel_with_training_statistics():
    data = prepare(toy_arrays(), classes=None, train_subset=None, val_fraction=0.25, seed=0)
    channels = data.x_train.transpose(0, 1).reshape(2, -1)
    torch.testing.assert_close(channels.mean(dim=1), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        channels.std(dim=1, unbiased=False), torch.ones(2), atol=1e-4, rtol=0
    )
    assert data.mean.shape == data.std.shape == (2,)


@pytest.mark.parametrize("fraction", [0.01, 0.99])
def test_every_class_keeps_examples_on_both_sides_of_the_split(fraction):
    data = prepare(
        toy_arrays(per_class=3), classes=None, train_subset=None, val_fraction=fraction, seed=0
    )
    assert set(data.y_train.tolist()) == set(data.y_val.tolist()) == {0, 1, 2, 3}
