"""Execution of jobs: the trainer child process, the embedded executor, (later) Celery."""
