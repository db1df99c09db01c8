# voicegate container image: `make image` (docs/deploy.md). Configuration only through VOICEGATE_*
# environment variables (`voicegate serve --help` lists them); nothing is baked in but defaults.
#
# BASE is any Debian-like image with Python >= 3.12, python3 -m venv and useradd on it: the
# official python:3.12-slim by default, or a local one where no registry is reachable
# (scripts/local-image-base, `make image-local`). Both stages must use the same BASE: the venv
# copied from the first points at the interpreter of the second.
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
# Which extras go in: `default` (Bedrock, the embedded offline brain, the stand-in, the Redis
# cluster directory), or e.g. `bedrock,cluster` for a much smaller Bedrock-only image.
ARG EXTRAS=default
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/voicegate
# Only what the wheel is built from (.dockerignore keeps the rest of the tree out).
COPY pyproject.toml README.md /src/
COPY src /src/src
COPY web /src/web
# The extras with the versions pinned (==) in pyproject.toml.
RUN /opt/voicegate/bin/pip install "/src[${EXTRAS}]" \
    && /opt/voicegate/bin/pip uninstall --yes pip \
    && /opt/voicegate/bin/python -c "import voicegate.cli, aiortc, av"

FROM ${BASE}
LABEL org.opencontainers.image.title="voicegate" \
      org.opencontainers.image.description="WebRTC gateway between browsers and Amazon Nova Sonic" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/voicegate \
        --shell /usr/sbin/nologin voicegate
COPY --from=build /opt/voicegate /opt/voicegate
ENV PATH=/opt/voicegate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VOICEGATE_HOST=0.0.0.0 \
    VOICEGATE_PORT=8080 \
    VOICEGATE_LOG_FORMAT=json
USER 10001:10001
WORKDIR /home/voicegate
EXPOSE 8080/tcp
# Liveness without curl: the interpreter that is already in the image asks /healthz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('VOICEGATE_PORT', '8080') + '/healthz', timeout=4)"]
# Exec form: voicegate is PID 1 and gets SIGTERM itself (it drains calls, docs/deploy.md).
ENTRYPOINT ["voicegate"]
CMD ["serve"]
