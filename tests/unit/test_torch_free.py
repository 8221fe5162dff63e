"""The API process starts, takes jobs and uploads, and lists the catalog without torch or
numpy: they load only in the trainer and the upload inspector (child processes)."""

import subprocess
import sys

STARTS_THE_APP = """
import sys
from otrt.wiring import build_embedded
from otrt_core.settings import Settings
from fastapi.testclient import TestClient
embedded = build_embedded(Settings(data_dir=sys.argv[1]))
client = TestClient(embedded.app)
body = {"mode": "supervised", "student": {"architecture": "mlp"}, "dataset": {"name": "digits"}}
assert client.post("/v1/jobs", json=body).status_code == 201
assert client.get("/v1/architectures").status_code == 200
upload = client.post("/v1/files?purpose=dataset", content=b"PK", headers={"X-Filename": "d.npz"})
assert upload.status_code == 422
print(sorted({"torch", "numpy", "onnx"} & set(sys.modules)))
"""


def test_the_embedded_app_serves_without_torch_or_numpy(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", STARTS_THE_APP, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_the_shipped_catalog_is_the_registries_own():
    """otrt_core/catalog.json drifts from the zoo or the datasets: run `make catalog`."""
    from otrt.catalog_command import live_catalog
    from otrt_core.catalog import catalog

    assert catalog() == live_catalog()
