# otrt API (and the one-shot `otrt migrate`): slim, CPU-only PyTorch, non-root.
# The API imports torch only to check uploaded checkpoints and list the zoo.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 otrt
WORKDIR /app

# Dependencies first, so that code changes rebuild one small layer.
COPY pyproject.toml README.md ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.14.1" "torchvision==0.29.1" \
 && mkdir -p otrt otrt_core api worker && touch otrt/__init__.py otrt_core/__init__.py api/__init__.py worker/__init__.py \
 && pip install . && pip uninstall -y otrt

COPY otrt ./otrt
COPY otrt_core ./otrt_core
COPY api ./api
COPY worker ./worker
COPY migrations ./migrations
RUN pip install --no-deps -e . && mkdir -p /data && chown otrt /data

USER otrt
ENV OTRT_DATA_DIR=/data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
CMD ["otrt", "api", "--host", "0.0.0.0", "--port", "8000"]
