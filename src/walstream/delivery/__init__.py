"""Delivery: the ack ledger (acks), fan-out to subscribers (hub), auth, and the two APIs (v1/, seed/)."""
