"""schemathesis against the app's own OpenAPI, in process: no 5xx, every response as documented.

Generated jobs are only queued (the dispatcher records ids); uploads get random
bytes, which must be refused with a documented problem, never a 500.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import AppParts, create_app
from otrt_core.jobs.db import make_engine, make_sessions, migrate
from otrt_core.jobs.files import FileRecords
from otrt_core.jobs.keys import KeyStore
from otrt_core.jobs.service import Service
from otrt_core.jobs.storage import LocalStorage
from otrt_core.jobs.store import JobStore
from tests.service.test_api import RecordingDispatcher


def build_app(root):
    engine = make_engine(f"sqlite:///{root / 'otrt.db'}")
    migrate(engine)
    sessions = make_sessions(engine)
    service = Service(
        JobStore(sessions),
        FileRecords(sessions),
        LocalStorage(root / "store"),
        RecordingDispatcher(),
        max_upload_bytes=1_000_000,
    )
    keys = KeyStore(sessions)
    app = create_app(AppParts(engine=engine, service=service, keys=keys, auth=True))
    return app, keys.create("schemathesis")[1]


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
    case.call_and_validate(
        headers={"Authorization": f"Bearer {KEY}"}, excluded_checks=[positive_data_acceptance]
    )
