# DeepWeightFlow: one image for the API (`python -m service`) and the workers (`python -m worker`).
#
#   docker build -t deepweightflow .                                # CPU torch (default)
#   docker build -t deepweightflow --build-arg TORCH_VARIANT=cu128 . # CUDA 12.8 torch for GPU workers
#
# Generator artifacts and job results are not baked in: docker-compose.yml mounts them under /data.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

# Which PyTorch wheel index to install torch from: "cpu", or a CUDA tag such as "cu126" or "cu128".
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_WAIT_POLICY=PASSIVE

WORKDIR /app

# torch first, from the variant's index, so the project install below finds it satisfied.
RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"

COPY pyproject.toml README.md ./
COPY models ./models
COPY service ./service
COPY worker ./worker
COPY deepweightflow ./deepweightflow
RUN pip install .

RUN useradd --create-home --uid 10001 dwf \
    && mkdir -p /data/results /data/generators \
    && chown -R dwf /data
USER dwf

ENV DWF_RESULTS_DIR=/data/results \
    DWF_GENERATORS_DIR=/data/generators \
    DWF_HOST=0.0.0.0 \
    DWF_PORT=8000
EXPOSE 8000

# The API by default; the worker service overrides the command with `python -m worker`.
CMD ["python", "-m", "service"]
