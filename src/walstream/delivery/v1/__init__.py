"""The batched, typed walstream.v1 API: service (RPCs, batching), adapter (subscription filters, Event framing),
wire and typed (column values straight to protobuf wire bytes)."""
