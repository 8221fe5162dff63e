"""The OpenAPI document is valid OpenAPI 3.1, and docs/openapi.json is what the API serves."""

import json

from openapi_spec_validator import validate

from otrt.wiring import OPENAPI_FILE, build_embedded
from otrt_core.settings import Settings


def served_document(tmp_path) -> dict:
    return build_embedded(Settings(data_dir=tmp_path)).app.openapi()


def test_the_served_document_is_valid_openapi(tmp_path):
    document = served_document(tmp_path)
    validate(document)  # raises on a dangling $ref or a misplaced field
    assert document["openapi"].startswith("3.1")
    assert "$defs" not in json.dumps(document)  # every schema lives under components


def test_docs_openapi_json_is_the_served_document(tmp_path):
    """A change of the HTTP contract is a visible diff: run `make openapi`."""
    assert json.loads(OPENAPI_FILE.read_text()) == served_document(tmp_path)


def test_created_objects_link_to_the_operations_that_take_their_ids(tmp_path):
    document = served_document(tmp_path)
    operations = {
        op["operationId"]: op for path in document["paths"].values() for op in path.values()
    }
    for path, parameter in [("/v1/files", "file_id"), ("/v1/jobs", "job_id")]:
        links = document["paths"][path]["post"]["responses"]["201"]["links"]
        assert len(links) >= 2
        for link in links.values():
            target = operations[link["operationId"]]  # a link to nothing is a KeyError
            assert parameter in [p["name"] for p in target["parameters"]]
            assert link["parameters"] == {parameter: "$response.body#/id"}
