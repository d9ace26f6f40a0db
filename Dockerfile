# syntax=docker/dockerfile:1
#
# orderpay image: one image for every process; the command picks the process.
#   docker build -t orderpay:local .
#   docker run --rm --env-file .env orderpay:local db upgrade
#   docker run --rm --env-file .env -p 8000:8000 orderpay:local            # serve-webhooks
#   docker run --rm --env-file .env orderpay:local worker
# docker-compose.yml wires these together with Postgres and Redis.

# Both stages must use the same Python: the virtualenv is copied from one to the other.
# orderpay supports 3.11, 3.12 and 3.13; the image uses the one CI runs the whole suite on.
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# builder: build a wheel of the project and install it, with its dependencies, into /opt/venv.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

WORKDIR /src
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip

# Dependencies first, from the lock file alone, so editing the code does not reinstall them.
# requirements.lock pins every package, transitive ones included, with their hashes
# (`uv pip compile ... --generate-hashes`, see README "Development"): an image built next month
# installs the very same files, and pip refuses any file whose hash differs. Every dependency
# ships wheels for CPython on Linux (psycopg2-binary included): no compiler.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes --no-deps --requirement requirements.lock

# Then the project itself, as a wheel (what `pip install .` installs; package data included),
# without its dependencies: they are the locked ones above, and `pip check` proves they fit.
COPY pyproject.toml README.md ./
COPY orderpay ./orderpay
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-deps /wheels/orderpay-*.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/orderpay --version

# ---------------------------------------------------------------------------------------------
# runtime: the slim base, the virtualenv, a non-root user. No compiler, no pip cache, no source.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="orderpay" \
      org.opencontainers.image.description="Payments back office: operator CLI, webhook listener, workers." \
      org.opencontainers.image.licenses="MIT"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A fixed uid/gid, so volume ownership and runAsNonRoot policies can rely on it. Its home is the
# working directory, writable by it alone (the embedded SQLite default lives there, if used).
RUN groupadd --system --gid 10001 orderpay \
    && useradd --system --uid 10001 --gid orderpay --home-dir /app --create-home \
        --shell /usr/sbin/nologin orderpay

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

EXPOSE 8000

# No HEALTHCHECK here: the same image runs `worker` and `db upgrade`, which serve no HTTP.
# docker-compose.yml gives the webhook listener its check (GET /healthz via python urllib).

ENTRYPOINT ["orderpay"]
CMD ["serve-webhooks", "--host", "0.0.0.0", "--port", "8000"]
