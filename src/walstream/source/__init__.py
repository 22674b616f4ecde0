"""The source stage: everything that speaks to PostgreSQL's replication protocol.

stream: the replication connection and slot (START_REPLICATION, reconnects' classification); copyboth: the CopyBoth
reader and status-update writer on psycopg2's libpq; decoder + messages: pgoutput bytes -> message tuples, a pure
function validating as it reads; catalog: slot and publication SQL on short side connections; type_lookup: type
look-ups off the event loop with a statement timeout; dsn: connection strings; slot_monitor: slot health polling.
"""
