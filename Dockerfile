# A thin copy of the README's set-up: the same Makefile target, with the official CPU wheel index for torch.
FROM python:3.11-slim AS build
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml Makefile README.md ./
COPY bot ./bot
COPY index ./index
COPY policy_text ./policy_text
RUN make setup TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" \
    && HF_HUB_OFFLINE=1 POLICYBOT_DATA_DIR=/app/var .venv/bin/policybot index

FROM python:3.11-slim
WORKDIR /app
RUN useradd --create-home --uid 10001 policybot
COPY --from=build --chown=policybot /app /app
USER policybot
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 POLICYBOT_DATA_DIR=/app/var HOST=0.0.0.0 PORT=3978
EXPOSE 3978
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD ["/app/.venv/bin/python", "-c", "import os,urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT','3978')}/healthz\", timeout=4)"]
CMD ["/app/.venv/bin/policybot", "serve"]
