"""Models from anywhere at the API: ONNX uploads inspected, jobs checked against them."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from tests.service.api_helpers import assert_problem, teacher_bytes, upload
from tests.utils.graphs import export, torch_graph, unknown_operator_graph


@pytest.fixture
def engine(tmp_path):
    """SQLite only: these checks are about models, not databases (both run elsewhere)."""
    from otrt_core.jobs.db import make_engine, migrate

    engine = make_engine(f"sqlite:///{tmp_path / 'otrt.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def conv_graph(tmp_path_factory) -> bytes:
    return torch_graph(tmp_path_factory.mktemp("graphs") / "conv.onnx", epochs=0).read_bytes()


def distill(teacher: dict, **regularizer) -> dict:
    """A distill job with OT on the layers named (the layer checks are OT's)."""
    return {
        "mode": "distill",
        "teacher": teacher,
        "student": {"architecture": "cnn_small"},
        "dataset": {"name": "digits"},
        "regularizer": {"kind": "ot"} | regularizer,
    }


def test_an_onnx_model_is_inspected_and_jobs_are_checked_against_its_layers(
    client, alice, conv_graph
):
    created = upload(client, alice, "model", "net.onnx", conv_graph)
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["purpose"] == "teacher" and record["format"] == "onnx"
    details = record["details"]
    assert details["inputs"] == [{"name": "image", "shape": ["batch", 1, 8, 8]}]
    assert details["num_classes"] == 10 and details["trainable"] is True
    layers = {layer["name"]: layer["shape"] for layer in details["layers"]}
    assert layers["/Relu_1_output_0"] == [32, 4, 4] and layers["penultimate"] == [64]
    assert details["conversion_max_abs_diff"] < 1e-5

    teacher = {"checkpoint": record["id"]}
    pairs = [{"teacher": "/Relu_1_output_0", "student": "stage2"}]
    ok = client.post("/v1/jobs", json=distill(teacher, layers=pairs), headers=alice)
    assert ok.status_code == 201, ok.text
    assert ok.json()["spec"]["teacher"] == {
        "checkpoint": record["id"],
        "architecture": None,
        "input": None,
    }

    wrong = [{"teacher": "/Relu_1_output", "student": "stage2"}]
    body = assert_problem(
        client.post("/v1/jobs", json=distill(teacher, layers=wrong), headers=alice), 422
    )
    (problem,) = body["errors"]
    assert problem["loc"] == ["body", "regularizer", "layers", 0, "teacher"]
    assert problem["msg"].split("nearest first: ")[1].startswith("/Relu_1_output_0")

    named = {"checkpoint": record["id"], "architecture": "cnn"}
    body = assert_problem(client.post("/v1/jobs", json=distill(named), headers=alice), 422)
    assert body["errors"][0]["loc"] == ["body", "teacher", "architecture"]

    # 8x8 grey inputs do not fit a 16x16 view: the teacher takes 8x8.
    resized = {"checkpoint": record["id"], "input": {"size": [16, 16]}}
    body = assert_problem(client.post("/v1/jobs", json=distill(resized), headers=alice), 422)
    assert body["errors"][0]["loc"] == ["body", "teacher", "input"]
    assert "takes inputs of shape [1, 8, 8], but gets [1, 16, 16]" in body["errors"][0]["msg"]


def test_a_state_dict_still_needs_its_architecture(client, alice):
    record = upload(client, alice, "teacher", "t.safetensors", teacher_bytes()).json()
    body = assert_problem(
        client.post("/v1/jobs", json=distill({"checkpoint": record["id"]}), headers=alice), 422
    )
    assert body["errors"][0]["loc"] == ["body", "teacher", "architecture"]


def test_unusable_model_files_are_422_with_the_reason(client, alice, tmp_path):
    mystery = unknown_operator_graph(tmp_path / "m.onnx").read_bytes()
    cases = {
        "corrupt.onnx": (b"\x08\x07garbage", "not a readable ONNX graph"),
        "mystery.onnx": (mystery, "operator otrt cannot convert.*Mystery"),
        "model.pt2": (b"PK\x03\x04archive", "torch.export archives .* unpickles"),
    }
    for name, (data, reason) in cases.items():
        body = assert_problem(upload(client, alice, "model", name, data), 422)
        assert re.search(reason, body["detail"]), body["detail"]
    uploads = tmp_path / "store" / "uploads"  # the parts fixture's storage
    assert not uploads.exists() or list(uploads.iterdir()) == []


def test_architectures_page_through_zoo_timm_and_torchvision_names(client, alice):
    zoo = client.get("/v1/architectures", headers=alice)
    assert zoo.status_code == 200 and "Link" not in zoo.headers
    assert {entry["source"] for entry in zoo.json()} == {"zoo"} and len(zoo.json()) == 26
    assert {"cnn", "resnet20"} <= {entry["name"] for entry in zoo.json()}

    seen, url = [], "/v1/architectures?source=timm&search=ResNet1&limit=7"
    while url:
        page = client.get(url, headers=alice)
        assert page.status_code == 200 and len(page.json()) <= 7
        seen += [entry["name"] for entry in page.json()]
        link = page.headers.get("Link")
        url = link[1 : link.index(">")] if link else None
    assert seen == sorted(seen) and len(seen) == len(set(seen)) > 7
    assert "timm/resnet18" in seen and all("resnet1" in name for name in seen)

    vision = client.get("/v1/architectures?source=torchvision&search=mobilenet_v3", headers=alice)
    assert [e["name"] for e in vision.json()] == [
        "torchvision/mobilenet_v3_large",
        "torchvision/mobilenet_v3_small",
    ]
    assert_problem(client.get("/v1/architectures?source=keras", headers=alice), 422)


def test_an_unknown_library_name_suggests_the_nearest(client, alice):
    body = {
        "mode": "supervised",
        "student": {"architecture": "timm/resnet81"},
        "dataset": {"name": "digits"},
    }
    problem = assert_problem(client.post("/v1/jobs", json=body, headers=alice), 422)
    assert "nearest: timm/resnet18" in problem["errors"][0]["msg"]
    body["student"]["architecture"] = "timm/resnet18"
    assert client.post("/v1/jobs", json=body, headers=alice).status_code == 201


def test_a_student_starts_from_an_uploaded_model(client, alice, conv_graph):
    graph = upload(client, alice, "model", "student.onnx", conv_graph).json()["id"]
    state = upload(client, alice, "model", "mlp.safetensors", teacher_bytes()).json()["id"]
    teacher = {"architecture": "mlp", "checkpoint": state}
    body = distill(teacher) | {"student": {"init": graph}}
    created = client.post("/v1/jobs", json=body, headers=alice)
    assert created.status_code == 201, created.text
    assert client.store.get(created.json()["id"], "alice").init_file_id == graph

    pairs = [{"teacher": "penultimate", "student": "/Relu_9_output_0"}]
    problem = assert_problem(
        client.post(
            "/v1/jobs", json=body | {"regularizer": {"kind": "ot", "layers": pairs}}, headers=alice
        ),
        422,
    )
    assert problem["errors"][0]["loc"] == ["body", "regularizer", "layers", 0, "student"]
    named = body | {"student": {"init": graph, "architecture": "mlp"}}
    problem = assert_problem(client.post("/v1/jobs", json=named, headers=alice), 422)
    assert problem["errors"][0]["loc"] == ["body", "student", "architecture"]

    # A state dict of the student's own architecture.
    from_state = body | {"student": {"init": state, "architecture": "mlp"}}
    assert client.post("/v1/jobs", json=from_state, headers=alice).status_code == 201
    bare = body | {"student": {"init": state}}
    problem = assert_problem(client.post("/v1/jobs", json=bare, headers=alice), 422)
    assert problem["errors"][0]["loc"] == ["body", "student", "architecture"]


def test_a_channel_mismatch_without_input_is_422(client, alice, tmp_path):
    """An RGB graph teacher on grey digits: the job must say how to view the data."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 10))
    rgb = export(net, torch.zeros(2, 3, 8, 8), tmp_path / "rgb.onnx", "rgb")
    record = upload(client, alice, "model", "rgb.onnx", rgb.read_bytes()).json()
    teacher = {"checkpoint": record["id"]}
    body = assert_problem(client.post("/v1/jobs", json=distill(teacher), headers=alice), 422)
    assert body["errors"][0]["loc"] == ["body", "teacher", "input"]
    assert "[3, 8, 8], but gets [1, 8, 8]" in body["errors"][0]["msg"]
    viewed = {"checkpoint": record["id"], "input": {"channels": 3}}
    assert client.post("/v1/jobs", json=distill(viewed), headers=alice).status_code == 201
