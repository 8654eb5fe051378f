# watchkeeper: the front and its workers in one container, on the CPU. See docs/deploy.md.
#   docker build -t watchkeeper .
#   docker run -p 8000:8000 -v wk-cache:/var/cache/watchkeeper -v wk-data:/var/lib/watchkeeper \
#     -e WK_API_KEYS_FILE=/run/secrets/keys.json watchkeeper
FROM python:3.11-slim-bookworm AS build
# torch==2.13.0 from PyPI is a CUDA build of several GB: take the CPU build of the same
# version (the pin of pyproject.toml's `apps` extra) from the PyTorch wheel index first.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/watchkeeper \
 && /opt/watchkeeper/bin/pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/watchkeeper/bin/pip install ".[apps]"

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 watchkeeper \
 && useradd --system --uid 10001 --gid watchkeeper --home-dir /var/lib/watchkeeper \
      --no-create-home --shell /usr/sbin/nologin watchkeeper \
 && mkdir -p /var/lib/watchkeeper /var/cache/watchkeeper \
 && chown watchkeeper:watchkeeper /var/lib/watchkeeper /var/cache/watchkeeper \
 && chmod 0700 /var/lib/watchkeeper
COPY --from=build /opt/watchkeeper /opt/watchkeeper
# Listening on every address needs API keys (WK_API_KEYS_FILE) or WK_ALLOW_ANONYMOUS=true:
# without either the server refuses to start (docs/security.md).
ENV PATH=/opt/watchkeeper/bin:$PATH \
    HOME=/var/lib/watchkeeper \
    WK_HOST=0.0.0.0 \
    WK_PORT=8000 \
    WK_DATA_DIR=/var/lib/watchkeeper \
    WK_CACHE_DIR=/var/cache/watchkeeper \
    XDG_CACHE_HOME=/var/cache/watchkeeper \
    HF_HOME=/var/cache/watchkeeper/huggingface \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1
# Model weights and durable jobs outlive the container.
VOLUME ["/var/cache/watchkeeper", "/var/lib/watchkeeper"]
USER 10001:10001
EXPOSE 8000
# /livez: the front answers (models may still load: /readyz says when they serve).
# Port 8000: change it here too when overriding WK_PORT.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/livez', timeout=2)"]
# `docker stop` sends SIGTERM: the front drains for grace_period_s (30 s); give it
# `docker stop -t 45` (the default 10 s cuts the drain short).
STOPSIGNAL SIGTERM
ENTRYPOINT ["watchkeeper"]
CMD ["serve"]
