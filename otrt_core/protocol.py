"""The contract between the trainer and the service, importable without torch.

One copy of each name both sides use: the trainer's exit codes, the files it
writes, the OT option names and defaults the spec offers, and the error codes
a failed job can carry. The trainer (``otrt train``) writes these, the
executors read them, the spec and the API quote them; none of them imports
the other's heavy half.
"""

from __future__ import annotations

# --- exit codes of `otrt train` ---------------------------------------------------------
EXIT_OK = 0
EXIT_INVALID = 2  # the spec or its inputs are wrong: retrying will not help
EXIT_DIVERGED = 3  # the loss turned non-finite: the job failed, retrying will not help
EXIT_STOPPED = 75  # stopped on request (SIGTERM) with a checkpoint: resume it
EXIT_MAX_RUNTIME = 124  # training.max_runtime_s ran out (a checkpoint is saved)

# --- what the trainer writes in its output directory ------------------------------------
CHECKPOINT = "checkpoint.pt"
STUDENT_WEIGHTS = "student.safetensors"  # the selected student; a teacher job lends it
STUDENT_ONNX = "student.onnx"
METRICS = "metrics.json"
RESOLVED_SPEC = "spec.json"
PLAN = "plan.npy"  # the latest transport plan of an OT run
ARTIFACTS = (STUDENT_WEIGHTS, METRICS, RESOLVED_SPEC, STUDENT_ONNX, PLAN)

# --- the OT regularizer's options (METHOD.md) -------------------------------------------
SOLVERS = ("auto", "exact", "assignment", "sinkhorn")
SPATIAL_MODES = ("pool", "flatten")
NORMALIZATIONS = ("none", "center", "standardize", "unit")
# Real costs sit in a narrow band far above zero: even relative to the spread,
# epsilon = 0.05 overestimates Omega by 13-30% at widths 64-2048, while 0.002
# with 50 epsilon-scaled iterations stays within 1% of exact (docs/ot.md).
DEFAULT_EPSILON = 0.002
DEFAULT_MAX_ITER = 50

# --- error codes of a failed job (``job.error.code``) -----------------------------------
INVALID_INPUT = "invalid_input"  # the spec or an input cannot be used
DIVERGED = "diverged"  # the training loss turned non-finite
MAX_RUNTIME = "max_runtime"  # training.max_runtime_s ran out
TIME_LIMIT = "time_limit"  # the attempt outlived max_runtime_s and its grace
INPUT_MISSING = "input_missing"  # an input vanished between submission and start
WORKER_LOST = "worker_lost"  # the executor died on every attempt
INTERNAL_ERROR = "internal_error"  # a fault of otrt's, not of the job: see the server log
