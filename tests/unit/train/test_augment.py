"""Augmentation: each op against a hand-made view, seeded draws, and a teacher cache whose
K views are the very views the student is shown."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from otrt_core.models import build_model
from otrt_core.train.augment import NOISE_BANK, Augmenter, Op, standard
from otrt_core.train.batches import seeded
from otrt_core.train.teacher_cache import TeacherCache

IMAGES = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)


def test_crop_takes_the_padded_image_at_each_offset():
    augmenter = Augmenter([Op("crop", 2)], (3, 6, 6), seed=0)
    offsets = torch.tensor([[0, 4], [2, 1]])
    out = augmenter.apply(IMAGES, {"crop": offsets})
    padded = F.pad(IMAGES, (2, 2, 2, 2))
    assert torch.equal(out[0], padded[0, :, 0:6, 4:10])
    assert torch.equal(out[1], padded[1, :, 2:8, 1:7])  # (2, 2): the image itself, shifted 1


def test_flip_rotate_and_noise():
    flip = Augmenter([Op("flip")], (3, 6, 6), seed=0)
    out = flip.apply(IMAGES, {"flip": torch.tensor([True, False])})
    assert torch.equal(out[0], IMAGES[0].flip(-1)) and torch.equal(out[1], IMAGES[1])
    rotate = Augmenter([Op("rotate", 90)], (3, 6, 6), seed=0)
    out = rotate.apply(IMAGES, {"rotate": torch.tensor([0.0, 90.0])})
    assert torch.allclose(out[0], IMAGES[0], atol=1e-4)
    # A quarter turn of a square image moves pixel centers onto pixel centers.
    assert torch.allclose(out[1], IMAGES[1].rot90(1, dims=(1, 2)), atol=1e-3)
    noise = Augmenter([Op("noise", 0.5)], (3, 6, 6), seed=0)
    out = noise.apply(IMAGES, {"noise": torch.tensor([3, NOISE_BANK - 1])})
    assert torch.allclose(out[1] - IMAGES[1], 0.5 * noise.noise[NOISE_BANK - 1], atol=1e-4)


def test_draws_follow_their_seed_and_standard_spares_sequences():
    augmenter = Augmenter(standard((3, 6, 6)), (3, 6, 6), seed=0)
    first, again = (augmenter.draw(64, seeded(1, 2, 3)) for _ in range(2))
    other = augmenter.draw(64, seeded(1, 2, 4))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["crop"], other["crop"])
    assert int(first["crop"].min()) >= 0 and int(first["crop"].max()) <= 8
    assert standard((1, 40)) == []


@pytest.mark.parametrize("pooled", [False, True])
def test_the_cache_serves_the_teachers_outputs_on_the_view_the_student_sees(pooled):
    torch.manual_seed(0)
    teacher = build_model("cnn_small", input_shape=(1, 8, 8)).eval()
    inputs = torch.randn(40, 1, 8, 8)
    augmenter = Augmenter([Op("crop", 2), Op("flip"), Op("rotate", 20)], (1, 8, 8), seed=0)
    views = [augmenter.draw(len(inputs), seeded(0, 7919, v)) for v in range(3)]
    cache = TeacherCache.build(
        teacher, inputs, {"stage2"}, torch.device("cpu"), 16, 1 << 30,
        pooled=pooled, augmenter=augmenter, view_params=views,
    )  # fmt: skip
    assert cache.views == 3
    indices, chosen = torch.tensor([5, 0, 39, 5]), torch.tensor([2, 0, 1, 1])
    served = cache.lookup(indices, chosen)
    shown = augmenter.apply(inputs[indices], cache.params(indices, chosen))
    with torch.no_grad():
        expected = teacher.forward_stages(shown)
    assert torch.allclose(served["logits"], expected["logits"], atol=1e-5)
    stage = expected["stage2"]
    stage = stage.mean(dim=(2, 3)) if pooled else stage
    assert torch.allclose(served["stage2"], stage, atol=1e-5)
