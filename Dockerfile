# One image for every TaskForge role; the command picks it:
#   docker run IMAGE api | worker [--demo-handlers] | scheduler | migrate
# Stage 1 installs the exact versions uv.lock pins (hashes checked) into a virtualenv, then
# the taskforge wheel (the SQL migrations ship inside it) with uvloop; stage 2 is a slim
# runtime that only receives that venv.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# taskforge/ holds relative links to the root folders; copying both keeps them resolvable.
COPY pyproject.toml uv.lock README.md ./
COPY domain/ domain/
COPY application/ application/
COPY adapters/ adapters/
COPY entrypoints/ entrypoints/
COPY client/ client/
COPY cli/ cli/
COPY bench/ bench/
COPY migrations/ migrations/
COPY taskforge/ taskforge/
RUN uv_version=$(sed -n '/^name = "uv"$/{n;s/^version = "\(.*\)"$/\1/p;}' uv.lock) \
 && pip install "uv==${uv_version}" \
 && uv export --frozen --extra fast --no-emit-project --format requirements-txt > /tmp/locked.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes -r /tmp/locked.txt \
 && pip wheel --no-deps --wheel-dir /dist . \
 && /opt/venv/bin/pip install --no-deps "$(ls /dist/taskforge-*.whl)" \
 && /opt/venv/bin/python -c "from importlib.resources import files; \
assert any(p.name.endswith('.sql') for p in (files('taskforge') / 'migrations').iterdir())"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="taskforge" \
      org.opencontainers.image.description="Fault-tolerant distributed job queue and scheduler" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 taskforge \
 && useradd --system --uid 10001 --gid taskforge --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin taskforge
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HTTP_ADDR=:8080
USER 10001:10001
EXPOSE 8080
# Liveness of the API role: /healthz on the port of HTTP_ADDR. Roles without HTTP (worker,
# scheduler) should disable or replace it, as docker-compose.yml does.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('HTTP_ADDR', ':8080').rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]
# Exec form: SIGTERM from `docker stop` reaches taskforge itself, which stops gracefully.
ENTRYPOINT ["taskforge"]
CMD ["api"]
