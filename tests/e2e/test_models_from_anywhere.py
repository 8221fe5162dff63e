"""Teachers from two other frameworks, over real HTTP on `otrt serve`, through the SDK.

A conv net written here (not in otrt's zoo) exported by ``torch.onnx.export``,
and a scikit-learn MLP exported by skl2onnx, each teaches a zoo student on
digits; the downloaded student's ONNX graph is run by onnxruntime on the raw
test split and must give the accuracy the job reported.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
from safetensors.torch import load_file

from otrt.client import Client, Invalid
from otrt_core.data import load_arrays
from otrt_core.spec import resolve_spec
from otrt_core.train import RunOptions, train
from tests.utils.graphs import sklearn_graph, torch_graph

pytestmark = pytest.mark.slow
TRAINING = {"epochs": 4, "batch_size": 64, "lr": 0.05}


def downloaded_accuracy(client: Client, job_id: str, tmp_path) -> float:
    """The student's accuracy on digits' raw test split, from its downloaded ONNX graph."""
    metrics = json.loads(client.download(job_id, "metrics.json", tmp_path).read_text())
    graph = client.download(job_id, "student.onnx", tmp_path)
    raw = load_arrays("digits")
    mean = np.array(metrics["normalization"]["mean"]).reshape(1, -1, 1, 1)
    std = np.array(metrics["normalization"]["std"]).reshape(1, -1, 1, 1)
    x = ((raw.x_test - mean) / std).astype(np.float32)
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": x})
    return float((logits.argmax(axis=1) == raw.y_test).mean())


def test_onnx_teachers_from_torch_and_scikit_learn_teach_a_zoo_student(served, tmp_path):
    url, key = served
    conv = torch_graph(tmp_path / "conv.onnx")
    mlp, _ = sklearn_graph(tmp_path / "mlp.onnx")
    with Client(url, key, timeout=120) as client:
        conv_file = client.upload(conv, "model")
        mlp_file = client.upload(mlp, "model")
        assert conv_file["format"] == mlp_file["format"] == "onnx"
        jobs = {
            # The conv net was trained on (x - 0.3) / 0.37: its own view, not the dataset's.
            "torch": {
                "teacher": {
                    "checkpoint": conv_file["id"],
                    "input": {"mean": [0.3], "std": [0.37]},
                },
                "regularizer": {"layers": [{"teacher": "/Relu_1_output_0", "student": "stage2"}]},
            },
            # The MLP reads 64 flat values in [0, 1]: each 8x8 image, flattened.
            "sklearn": {
                "teacher": {"checkpoint": mlp_file["id"], "input": {"mean": [0.0], "std": [1.0]}},
                "regularizer": {
                    "layers": [{"teacher": "next_activations", "student": "penultimate"}]
                },
            },
        }
        ids = {
            name: client.create_job(
                {
                    "mode": "distill",
                    "student": {"architecture": "cnn_small"},
                    "dataset": {"name": "digits"},
                    "kd": {"weight": 1.0},
                    "training": TRAINING,
                    **parts,
                }
            )["id"]
            for name, parts in jobs.items()
        }
        for name, job_id in ids.items():
            job = client.wait(job_id, timeout=600)
            assert job["status"] == "succeeded", (name, job)
            reported = job["metrics"]["test_accuracy"]
            assert downloaded_accuracy(client, job_id, tmp_path) == pytest.approx(
                reported, abs=1e-6
            )
            assert reported > 0.6, (name, reported)


def test_a_timm_teacher_from_its_uploaded_weights(served, tmp_path):
    """timm's test_resnet (a small ResNet timm keeps for tests), trained here by otrt
    itself (supervised), uploaded as a state dict in timm's own names; its module paths
    are the layers the regularizer reads."""
    spec = resolve_spec(
        {
            "mode": "supervised",
            "student": {"architecture": "timm/test_resnet"},
            "dataset": {"name": "digits"},
            "training": TRAINING,
        }
    )
    train(spec, RunOptions(out_dir=tmp_path / "timm", device="cpu"), emit=lambda event: None)
    weights = tmp_path / "timm" / "student.safetensors"
    assert "layer1.0.conv1.weight" in load_file(weights)  # timm's names, no prefix
    url, key = served
    with Client(url, key, timeout=120) as client:
        file_id = client.upload(weights, "teacher")["id"]
        body = {
            "mode": "distill",
            "teacher": {"architecture": "timm/test_resnet", "checkpoint": file_id},
            "student": {"architecture": "cnn_small"},
            "dataset": {"name": "digits"},
            "kd": {"weight": 1.0},
            "regularizer": {"kind": "ot", "layers": [{"teacher": "layer2", "student": "stage2"}]},
            "training": TRAINING,
        }
        with pytest.raises(Invalid, match="nearest first: layer2"):
            wrong = {"kind": "ot", "layers": [{"teacher": "layer_2"}]}
            client.create_job(body | {"regularizer": wrong})
        # WKD-F on timm's module path, beside WKD-L with its class cost from timm's features.
        wkd = body | {
            "kd": {"kind": "wkd", "weight": "auto"},
            "regularizer": {
                "kind": "wkd_f",
                "layers": [{"teacher": "layer2", "student": "stage2"}],
            },
        }
        ids = [client.create_job(b)["id"] for b in (body, wkd)]
        for job_id in ids:
            job = client.wait(job_id, timeout=600)
            assert job["status"] == "succeeded", job
            reported = job["metrics"]["test_accuracy"]
            assert downloaded_accuracy(client, job_id, tmp_path) == pytest.approx(
                reported, abs=1e-6
            )
            assert reported > 0.6 and not job["metrics"]["collapsed"]


def test_the_sdk_pages_through_library_names(served):
    url, key = served
    with Client(url, key) as client:
        timm_names = [entry["name"] for entry in client.architectures("timm")]
        vision = [entry["name"] for entry in client.architectures("torchvision", "resnet")]
        zoo = list(client.architectures())
    assert len(timm_names) > 1000 and len(set(timm_names)) == len(timm_names)  # 100 a page
    assert timm_names == sorted(timm_names) and "timm/convnext_atto" in timm_names
    assert "torchvision/resnet18" in vision and all("resnet" in name for name in vision)
    assert {entry["source"] for entry in zoo} == {"zoo"}


# Each distillation term with the conv net's ONNX graph as the teacher, on the service's
# weights ("auto" where a kind is named without one).
TERMS = {
    "ot": {},
    "kd": {"regularizer": {"kind": "kd"}},
    "wkd-l": {"regularizer": {"kind": "kd"}, "kd": {"kind": "wkd"}},
    "ot + wkd-l": {"kd": {"kind": "wkd", "weight": "auto"}},
    "fitnet": {"regularizer": {"kind": "fitnet"}},
    "at": {
        "regularizer": {
            "kind": "at",
            "layers": [{"teacher": "/Relu_1_output_0", "student": "stage2"}],
        }
    },
    "wkd-f": {
        "regularizer": {
            "kind": "wkd_f",
            "layers": [{"teacher": "/Relu_1_output_0", "student": "stage2"}],
        }
    },
}


def test_an_onnx_teacher_teaches_with_every_term_over_http(served, tmp_path):
    url, key = served
    conv = torch_graph(tmp_path / "conv.onnx")
    with Client(url, key, timeout=120) as client:
        teacher = {
            "checkpoint": client.upload(conv, "model")["id"],
            "input": {"mean": [0.3], "std": [0.37]},
        }
        ids = {
            name: client.create_job(
                {
                    "mode": "distill",
                    "teacher": teacher,
                    "student": {"architecture": "cnn_small"},
                    "dataset": {"name": "digits"},
                    "training": TRAINING,
                    **parts,
                }
            )["id"]
            for name, parts in TERMS.items()
        }
        for name, job_id in ids.items():
            job = client.wait(job_id, timeout=600)
            assert job["status"] == "succeeded", (name, job)
            assert job["metrics"]["test_accuracy"] > 0.6, (name, job["metrics"]["test_accuracy"])
            events = list(client.events(job_id))
            (started,) = [e for e in events if e["type"] == "started"]
            # Every weight left to "auto" was set, and the job's spec.json holds the number.
            spec = json.loads(client.download(job_id, "spec.json", tmp_path).read_text())
            for path, number in started["data"]["weights"].items():
                section, *rest = path.split(".")
                assert rest == ["weight"] and spec[section]["weight"] == pytest.approx(number)
            assert started["data"]["weights"], name
            assert not any("collapsed" in e["message"] for e in events), name
