"""A client's story through a Python client generated from docs/openapi.json by
openapi-python-client, without hand edits: submit a job, follow it to the end, read its
report, download the student.

    python python_story.py GENERATED_DIR BASE_URL API_KEY

Prints one JSON line: the job id, its status, the student's size and test accuracy.
"""

from __future__ import annotations

import json
import sys
import time

TERMINAL = {"succeeded", "failed", "cancelled"}


def main(generated: str, base_url: str, key: str) -> None:
    sys.path.insert(0, generated)
    from otrt_client import AuthenticatedClient
    from otrt_client.api.jobs import create_job, download_artifact, get_job, job_report
    from otrt_client.models import JobOut, JobSpec

    client = AuthenticatedClient(base_url=base_url, token=key, raise_on_unexpected_status=True)
    spec = JobSpec.from_dict(
        {
            "mode": "supervised",
            "student": {"architecture": "mlp_small"},
            "dataset": {"name": "digits"},
            "training": {"epochs": 2, "batch_size": 64},
        }
    )
    job = create_job.sync(client=client, body=spec)
    assert isinstance(job, JobOut), job
    while str(job.status) not in TERMINAL:
        time.sleep(0.5)
        job = get_job.sync(client=client, job_id=job.id)
    report = job_report.sync(client=client, job_id=job.id)
    student = download_artifact.sync_detailed(
        client=client, job_id=job.id, name="student.safetensors"
    )
    print(
        json.dumps(
            {
                "job": job.id,
                "status": str(job.status),
                "bytes": len(student.content),
                "test_accuracy": report.test_accuracy,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
