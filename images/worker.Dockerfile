# The GPU worker image: ComfyUI from its official release at a pinned tag, its requirements as
# locked in uv.lock (the `comfyui` group), and the worker (`worker` group, services/). One
# container is one ComfyUI + worker pair; the worker starts ComfyUI itself (WORKER_COMFYUI_DIR).
# Also runs the host tools: `python -m services.fleet fetch|watchdog` (cloud-init/gpu-scripts).
# Build from the repository root: docker build -f images/worker.Dockerfile .
# CI publishes it on release tags (.github/workflows/worker-image.yml).
#
# Base pinned by digest: nvidia/cuda:12.8.1-base-ubuntu24.04 (index digest taken from public
# references; re-check with `docker buildx imagetools inspect` when bumping). torch's wheels
# bring their own CUDA 12.8 libraries; the base brings the NVIDIA container-runtime hook-up
# and Ubuntu 24.04's Python 3.12.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04@sha256:133c78a0575303be34164d0b90137a042172bdf60696af01a3c424ab402d86e2
ARG COMFYUI_TAG=v0.3.64
ARG COMFYUI_COMMIT=a125cd84b054a57729b5eecab930ca9408719832

FROM ${CUDA_IMAGE} AS build
ARG COMFYUI_TAG
ARG COMFYUI_COMMIT
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never UV_PYTHON=python3.12
# The distribution's packages at the base image's snapshot (the digest pins it).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir --break-system-packages uv==0.13.8 \
    && git clone --depth 1 --branch "${COMFYUI_TAG}" https://github.com/comfyanonymous/ComfyUI.git /opt/ComfyUI \
    && test "$(git -C /opt/ComfyUI rev-parse HEAD)" = "${COMFYUI_COMMIT}" \
    && rm -rf /opt/ComfyUI/.git
WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-default-groups --group worker --group comfyui --no-install-project
COPY services/ ./services/

FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app \
       --shell /usr/sbin/nologin app
COPY --from=build --chown=root:root /app /app
COPY --from=build --chown=root:root /opt/ComfyUI /opt/ComfyUI
# ComfyUI writes outputs, temp files, uploads and its user data beside itself; the code stays
# root-owned. Models come from the host (/models, extra_model_paths.yaml).
RUN install -d -o 10001 -g 10001 /opt/ComfyUI/output /opt/ComfyUI/temp /opt/ComfyUI/input \
    /opt/ComfyUI/user /opt/ComfyUI/custom_nodes /models
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    WORKER_COMFYUI_DIR=/opt/ComfyUI WORKER_COMFYUI_THREADS=2 \
    OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
WORKDIR /app
# The NVIDIA runtime gives the GPU device nodes to any user: no root needed.
USER 10001:10001
CMD ["python", "-m", "services.worker"]
