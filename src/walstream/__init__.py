"""walstream: PostgreSQL logical replication (pgoutput) streamed to gRPC clients."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("walstream")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
