# walstream: PostgreSQL logical replication (pgoutput) streamed to gRPC clients on port 50051.
#
#   docker build -t walstream .
#   docker run -p 50051:50051 walstream --connection "host=... user=... password=... dbname=..." \
#       start --publication my_publication --slot my_slot
#
# The broker sinks (`start --sink nats://... | kafka://...`, docs/sinks.md) are in by default: the `sinks`
# extra (nats-py, confluent-kafka with librdkafka inside its wheel, about 15 MB). An image without them:
#   docker build --build-arg EXTRAS= -t walstream .
#
# Every dependency (psycopg2-binary, grpcio, protobuf, orjson, confluent-kafka) ships manylinux wheels for
# amd64 and arm64, so the slim image needs no compiler or libpq headers.
FROM python:3.12-slim

# Optional dependency groups of pyproject.toml to install, comma-separated ("" for none).
ARG EXTRAS=sinks

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Only what `pip install .` reads: the project metadata (pyproject.toml names README.md as the long
# description) and the package itself; the generated gRPC stubs are committed under src/walstream/_proto.
COPY pyproject.toml README.md /tmp/walstream/
COPY src /tmp/walstream/src
RUN pip install --no-cache-dir "/tmp/walstream${EXTRAS:+[$EXTRAS]}" \
    && rm -rf /tmp/walstream \
    && groupadd --system --gid 10001 walstream \
    && useradd --system --uid 10001 --gid walstream --no-create-home --shell /usr/sbin/nologin walstream

# A numeric UID so orchestrators can verify runAsNonRoot without resolving names.
USER 10001:10001

# The gRPC server (`start --port`, default 50051; `--host` defaults to 0.0.0.0, so published ports reach it).
EXPOSE 50051

# The connection string comes from --connection or the CONNECTION environment variable.
ENTRYPOINT ["walstream"]
CMD ["--help"]
