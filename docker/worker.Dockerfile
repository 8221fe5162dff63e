# otrt Celery worker: CUDA runtime with the matching PyTorch build; one container per GPU.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /venv \
 && useradd --create-home --uid 10001 otrt
ENV PATH=/venv/bin:$PATH
WORKDIR /app

COPY pyproject.toml README.md ./
RUN pip install --index-url https://download.pytorch.org/whl/cu128 "torch==2.14.1" "torchvision==0.29.1" \
 && mkdir -p otrt otrt_core api worker && touch otrt/__init__.py otrt_core/__init__.py api/__init__.py worker/__init__.py \
 && pip install . && pip uninstall -y otrt

COPY otrt ./otrt
COPY otrt_core ./otrt_core
COPY api ./api
COPY worker ./worker
COPY migrations ./migrations
RUN pip install --no-deps -e . && mkdir -p /data && chown otrt /data

USER otrt
ENV OTRT_DATA_DIR=/data OTRT_TRAINER_DEVICE=cuda
# SIGTERM starts a warm shutdown: the running trainer checkpoints and its job is requeued.
STOPSIGNAL SIGTERM
CMD ["otrt", "worker"]
