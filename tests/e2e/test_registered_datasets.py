"""Registered datasets through `otrt serve` (API.md v1.2): a folder of JPEG and PNG images
of varying sizes, with the awkward files real folders hold, registered from an allowed
file:// prefix, converted by the embedded executor, and trained on in memory and streamed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import otrt
from tests.utils.images import awkward_files, image_tree
from tests.utils.processes import start_server

pytestmark = pytest.mark.slow

# 60 training images in all: at 16 px they fit the server's in-memory limit below, at
# 32 px they stream.
IN_MEMORY_LIMIT = 300_000


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos") / "shop"
    image_tree(root, classes=3, per_class=20, sizes=(40, 120))
    awkward_files(root / "train" / "class_0")
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("served")


@pytest.fixture(scope="module")
def server(tmp_path_factory, photos, data_dir):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.jpg").write_bytes(b"not yours")
    os.symlink(outside, photos.parent / "link-out")
    env = {
        "OTRT_DATA_SOURCES": f"file://{photos.parent}/",
        "OTRT_MAX_DECODED_BYTES": str(IN_MEMORY_LIMIT),
        "OTRT_LOADER_WORKERS": "2",
    }
    process, http = start_server(data_dir, extra_env=env)
    yield str(http.base_url)
    process.terminate()
    process.communicate(timeout=60)


@pytest.fixture(scope="module")
def client(server):
    with otrt.Client(server, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def dataset(client, photos) -> dict:
    registered = client.register_dataset(f"file://{photos}/", name="shop")
    assert registered["status"] == "inspecting" and registered["id"].startswith("ds_")
    return client.wait_dataset(registered["id"], timeout=120)


def test_a_folder_is_converted_with_its_counts_and_unreadable_files(client, dataset):
    assert dataset["status"] == "ready", dataset["error"]
    assert dataset["classes"] == ["class_0", "class_1", "class_2"]
    # 20 images per class, and 4 odd but readable files (CMYK, 16-bit, RGBA, rotated).
    assert dataset["counts"]["train"] == {"class_0": 24, "class_1": 20, "class_2": 20}
    unreadable = {
        entry["name"].rsplit("/", 1)[-1]: entry["reason"]
        for entry in dataset["unreadable"]["files"]
    }
    assert set(unreadable) == {"truncated.jpg", "empty.jpg", "notes.txt"}
    assert dataset["unreadable"]["count"] == 3
    assert "truncated" in unreadable["truncated.jpg"]
    images = dataset["images"]
    assert 40 <= images["min"][0] <= images["median"][0] <= images["max"][0] <= 120
    assert {"RGB", "CMYK", "RGBA"} <= set(images["modes"])
    assert dataset["fingerprint"].startswith("sha256:") and dataset["channels"] == 3
    events = [event["type"] for event in client.dataset_events(dataset["id"])]
    assert "converting" in events and events[-1] == "succeeded"
    listed = [d["id"] for d in client.registered_datasets()]
    assert dataset["id"] in listed
    assert "digits" in [d["name"] for d in client.datasets()]  # the built-ins as in v1


def test_registering_the_source_again_makes_a_new_snapshot_of_the_same_content(
    client, dataset, photos
):
    again = client.wait_dataset(client.register_dataset(f"file://{photos}")["id"], timeout=120)
    assert again["id"] != dataset["id"]
    assert again["fingerprint"] == dataset["fingerprint"]


@pytest.mark.parametrize(
    "source",
    ["file:///etc/", "file://{root}/shop/../../", "file://{root}/link-out/", "s3://elsewhere/x/"],
)
def test_a_source_outside_the_allowed_prefixes_is_refused_unread(client, photos, source):
    with pytest.raises(otrt.client.Invalid) as refused:
        client.register_dataset(source.format(root=photos.parent))
    assert refused.value.errors[0]["loc"] == ["body", "source"]


def _job(dataset: dict, image_size: int, **changes) -> dict:
    spec = {
        "mode": "supervised",
        "student": {"architecture": "cnn_small"},
        "dataset": {"name": dataset["id"], "image_size": image_size},
        "training": {"epochs": 3, "batch_size": 16, "lr": 0.05, "seed": 0},
    }
    return spec | changes


def _start(client, job_id: str) -> dict:
    return next(e for e in client.events(job_id) if e["type"] == "started")["data"]


def test_a_small_dataset_trains_in_memory(client, dataset):
    job = client.wait(client.create_job(_job(dataset, 16))["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    assert _start(client, job["id"])["data_path"] == "memory"
    assert job["spec"]["dataset"]["image_size"] == 16


def test_a_larger_one_streams_and_a_student_distills_from_it_with_augmentation(client, dataset):
    teacher = client.wait(client.create_job(_job(dataset, 32))["id"], timeout=300)
    assert teacher["status"] == "succeeded", teacher["error"]
    assert _start(client, teacher["id"])["data_path"] == "streamed"
    report = client._request("GET", f"/v1/jobs/{teacher['id']}/report").json()
    assert len(report["per_class"]) == 3
    # The streamed classes are learnable: far above chance (1/3) on held-out images.
    assert report["test_accuracy"] > 0.6

    distill = _job(
        dataset,
        32,
        mode="distill",
        teacher={"architecture": "cnn_small", "checkpoint": teacher["id"]},
        regularizer={"kind": "ot", "weight": 1.0},
    )
    distill["dataset"]["augment"] = "standard"
    student = client.wait(client.create_job(distill)["id"], timeout=300)
    assert student["status"] == "succeeded", student["error"]
    started = _start(client, student["id"])
    assert started["data_path"] == "streamed" and started["teacher_cache"] == "off"
    assert "new views" in started["teacher_cache_off"]  # the loader's random crops

    # Without the loader's crops the teacher's outputs are cached, and a registered pool
    # (the dataset itself, labels ignored) streams beside the labeled rows, read by KD.
    distill["dataset"]["augment"] = "none"
    cached = client.wait(client.create_job(distill)["id"], timeout=300)
    assert cached["status"] == "succeeded", cached["error"]
    assert _start(client, cached["id"])["teacher_cache"] == "memory"
    distill["dataset"]["unlabeled"] = dataset["id"]
    distill["kd"] = {"weight": "auto", "unlabeled": True}
    pooled = client.wait(client.create_job(distill)["id"], timeout=300)
    assert pooled["status"] == "succeeded", pooled["error"]
    started = _start(client, pooled["id"])
    assert started["data_path"] == "streamed" and started["unlabeled_inputs"] == 64
    assert started["teacher_cache"] == "off" and "pool rows" in started["teacher_cache_off"]


def test_a_dataset_in_use_cannot_be_deleted_and_a_finished_one_can(client, photos, data_dir):
    dataset = client.wait_dataset(client.register_dataset(f"file://{photos}")["id"], timeout=120)
    job = client.create_job(_job(dataset, 16))
    with pytest.raises(otrt.client.Conflict):
        client.delete_dataset(dataset["id"])
    client.wait(job["id"], timeout=300)
    snapshot = data_dir / "store" / "datasets" / dataset["id"]
    assert any(snapshot.rglob("*.tar"))  # the shards the job read
    client.delete_dataset(dataset["id"])
    with pytest.raises(otrt.client.NotFound):
        client.dataset(dataset["id"])
    assert not any(p.is_file() for p in snapshot.rglob("*"))  # the snapshot went with it


def test_the_image_bomb_as_a_folder_is_converted_one_image_at_a_time(
    client, photos, tmp_path, server
):
    """Two 6000x6000 PNGs of a few KB (about 1 GB as float32): the API never decodes them,
    the converter child decodes one at a time and stores each at 512 px."""
    import zipfile

    from tests.utils.bombs import image_bomb

    folder = photos.parent / "bomb"
    with zipfile.ZipFile(image_bomb(tmp_path / "bomb.zip")) as archive:
        archive.extractall(folder)
    dataset = client.wait_dataset(client.register_dataset(f"file://{folder}/")["id"], timeout=120)
    assert dataset["status"] == "ready", dataset["error"]
    assert dataset["images"]["max"] == [6000, 6000]
    assert dataset["bytes"] < 100_000  # stored at 512 px, not as found


def test_a_registered_pool_feeds_ot_and_kd_on_a_registered_dataset(client, dataset, photos):
    """dataset.unlabeled: a folder of images with no class folders, registered once, is
    the unlabeled batch's pool (the representation term and KD both read it); a labeled
    dataset serves as a pool too (its labels ignored); the pool in use is not deleted."""
    import numpy as np

    from tests.utils.images import class_image

    folder = photos.parent / "pool"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for n in range(30):
        class_image(n % 3, 48, 64, rng).save(folder / f"{n:02d}.jpg", quality=90)
    pool = client.wait_dataset(client.register_dataset(f"file://{folder}/")["id"], timeout=120)
    assert pool["status"] == "ready" and pool["classes"] == [] and "train" not in pool["counts"]
    teacher = client.wait(client.create_job(_job(dataset, 16))["id"], timeout=300)
    assert teacher["status"] == "succeeded", teacher["error"]

    def distill(pool_id: str, **reads) -> dict:
        job = _job(
            dataset,
            16,
            mode="distill",
            teacher={"architecture": "cnn_small", "checkpoint": teacher["id"]},
            **reads,
        )
        job["dataset"]["unlabeled"] = pool_id
        return job

    reads = {"regularizer": {"kind": "ot", "unlabeled": True}, "kd": {"weight": "auto"}}
    for body, loc in (
        (_job(pool, 16), ["body", "dataset", "name"]),  # a pool has no labels to learn
        (distill(pool["id"]), ["body", "dataset", "unlabeled"]),  # nothing reads it
        (distill("ds_000000000000000000000000", **reads), ["body", "dataset", "unlabeled"]),
    ):
        with pytest.raises(otrt.client.Invalid) as refused:
            client.create_job(body)
        assert refused.value.errors[0]["loc"] == loc, refused.value.errors

    job = client.create_job(distill(pool["id"], **reads))
    with pytest.raises(otrt.client.Conflict):
        client.delete_dataset(pool["id"])  # a live job reads it
    job = client.wait(job["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    started = _start(client, job["id"])
    assert started["unlabeled_inputs"] == 30 and set(started["weights"]) == {
        "regularizer.weight",
        "kd.weight",
    }
    assert job["spec"]["kd"]["unlabeled"] is True  # KD reads the pool with OT
    # A labeled dataset as the pool: every image it has, labels ignored.
    labeled_pool = client.create_job(distill(dataset["id"], **reads))
    labeled_pool = client.wait(labeled_pool["id"], timeout=300)
    assert labeled_pool["status"] == "succeeded", labeled_pool["error"]
    assert _start(client, labeled_pool["id"])["unlabeled_inputs"] == 64
    client.delete_dataset(pool["id"])


def test_a_pushed_folder_past_the_in_memory_limit_registers_and_trains(client, photos):
    """`otrt datasets push` of the photos: decoded they take far more than the server's
    in-memory limit (60 images at 40-120 px, 15 bytes a pixel against 300 kB), which
    refused the upload before; the converter decodes one at a time."""
    dataset = client.wait_dataset(client.push_dataset(photos)["id"], timeout=120)
    assert dataset["status"] == "ready", dataset["error"]
    assert dataset["counts"]["train"] == {"class_0": 24, "class_1": 20, "class_2": 20}
    job = client.wait(client.create_job(_job(dataset, 16))["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]


def test_a_dataset_a_live_sweep_trains_on_is_not_deleted(client, photos):
    dataset = client.wait_dataset(client.register_dataset(f"file://{photos}")["id"], timeout=120)
    sweep = client.sweeps.create(
        {
            "base": _job(dataset, 16) | {"training": {"epochs": 1, "batch_size": 16}},
            "space": {"training.lr": [0.01, 0.05]},
            "search": "grid",
            "parallel": 1,
        }
    )
    with pytest.raises(otrt.client.Conflict, match="is used by"):  # its trial, or itself
        client.delete_dataset(dataset["id"])
    client.sweeps.wait(sweep["id"], timeout=300)
    client.delete_dataset(dataset["id"])
