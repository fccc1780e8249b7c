# A serving image for one registered medtl model: `mlflow models serve` on the same base and torch as docker/Dockerfile.
# The model is fetched first (from any MLflow store), then baked in, so the image needs no tracking server:
#   mlflow artifacts download -u models:/medtl-demo@champion -d build/model
#   docker build -f docker/serve.Dockerfile -t medtl-serve:cpu .
#   docker run --rm -p 8080:8080 medtl-serve:cpu
# Limits per request (see README "Serving"): MEDTL_SERVE_MAX_ROWS, MEDTL_SERVE_MAX_BYTES, MEDTL_SERVE_MAX_FILES.
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG MODEL_DIR=build/model

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MEDTL_PROGRESS=0 \
    HOME=/tmp \
    MEDTL_SERVE_MAX_ROWS=64 \
    MEDTL_SERVE_MAX_BYTES=268435456 \
    MEDTL_SERVE_MAX_FILES=4096 \
    MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT=120

WORKDIR /opt/medtl
# torch first, from the CPU-only index: its wheels are a tenth of the CUDA ones
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md ./
COPY medtl ./medtl
RUN pip install . \
 && useradd --create-home --uid 1000 medtl
# the model as logged: weights, preprocessing, checksums (verified when the server loads it), medtl's code
COPY ${MODEL_DIR} /opt/model

USER 1000:1000
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=4)"]
ENTRYPOINT ["mlflow", "models", "serve", "-m", "/opt/model", "--env-manager", "local", "--host", "0.0.0.0", "--port", "8080"]
CMD ["--workers", "1"]
