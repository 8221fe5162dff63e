"""schemathesis against the app's own OpenAPI, in process: no 5xx, every response as documented.

Generated jobs are only queued (the dispatcher records ids); uploads get random
bytes, which must be refused with a documented problem, never a 500.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from otrt_core.jobs.db import make_engine, migrate
from tests.service.api_helpers import make_parts


def build_app(root):
    engine = make_engine(f"sqlite:///{root / 'otrt.db'}")
    migrate(engine)
    parts = make_parts(engine, root, max_upload_bytes=1_000_000)
    return create_app(parts), parts.keys.create("schemathesis")[1]


# Built at import: schemathesis generates its tests from the schema at collection.
APP, KEY = build_app(Path(tempfile.mkdtemp(prefix="otrt-contract-")))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,  # the same examples in every CI run
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_every_response_matches_the_contract(case):
    # Bytes that match the schema ("binary") are rarely a checkpoint or a dataset:
    # refusing them with 422 is right, so the positive-data check is left out.
    headers = {"Authorization": f"Bearer {KEY}"}
    if case.meta and case.meta.is_negative_at(ParameterLocation.HEADER):
        # The negative case may be the key left out: adding ours would undo it.
        headers = {}
    case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])
