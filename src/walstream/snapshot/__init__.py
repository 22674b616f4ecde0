"""Initial snapshot / incremental backfill for walstream.v1 subscriptions (docs/api.md "Snapshots").

request: SnapshotRequest validation; tables: which tables, their keys, publication row filters and column
lists, and the chunk query; copytext: COPY text rows -> pgoutput-shaped cells; reader: the chunk reader on
its own connection (worker thread); window: per-client watermark window reconciliation and the visibility
guard; token: resume tokens; runner: one client's backfill, chunk after chunk.
"""
