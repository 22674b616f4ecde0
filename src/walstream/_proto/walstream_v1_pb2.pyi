# DO NOT EDIT: generated from proto/walstream_v1.proto by scripts/gen_proto.py (make proto).
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SnapshotMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INCREMENTAL: _ClassVar[SnapshotMode]
    CONSISTENT: _ClassVar[SnapshotMode]

class SnapshotState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SNAPSHOT_STATE_UNSPECIFIED: _ClassVar[SnapshotState]
    SNAPSHOT_RUNNING: _ClassVar[SnapshotState]
    SNAPSHOT_TABLE_DONE: _ClassVar[SnapshotState]
    SNAPSHOT_DONE: _ClassVar[SnapshotState]

class Operation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_UNSPECIFIED: _ClassVar[Operation]
    INSERT: _ClassVar[Operation]
    UPDATE: _ClassVar[Operation]
    DELETE: _ClassVar[Operation]
    TRUNCATE: _ClassVar[Operation]
    BEGIN: _ClassVar[Operation]
    COMMIT: _ClassVar[Operation]
    MESSAGE: _ClassVar[Operation]
    SNAPSHOT: _ClassVar[Operation]

class ReplicaIdentity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICA_IDENTITY_UNSPECIFIED: _ClassVar[ReplicaIdentity]
    DEFAULT: _ClassVar[ReplicaIdentity]
    NOTHING: _ClassVar[ReplicaIdentity]
    FULL: _ClassVar[ReplicaIdentity]
    INDEX: _ClassVar[ReplicaIdentity]

class OldRow(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OLD_ROW_NONE: _ClassVar[OldRow]
    OLD_ROW_KEY: _ClassVar[OldRow]
    OLD_ROW_FULL: _ClassVar[OldRow]
INCREMENTAL: SnapshotMode
CONSISTENT: SnapshotMode
SNAPSHOT_STATE_UNSPECIFIED: SnapshotState
SNAPSHOT_RUNNING: SnapshotState
SNAPSHOT_TABLE_DONE: SnapshotState
SNAPSHOT_DONE: SnapshotState
OPERATION_UNSPECIFIED: Operation
INSERT: Operation
UPDATE: Operation
DELETE: Operation
TRUNCATE: Operation
BEGIN: Operation
COMMIT: Operation
MESSAGE: Operation
SNAPSHOT: Operation
REPLICA_IDENTITY_UNSPECIFIED: ReplicaIdentity
DEFAULT: ReplicaIdentity
NOTHING: ReplicaIdentity
FULL: ReplicaIdentity
INDEX: ReplicaIdentity
OLD_ROW_NONE: OldRow
OLD_ROW_KEY: OldRow
OLD_ROW_FULL: OldRow

class SubscribeRequest(_message.Message):
    __slots__ = ("subscription", "ack")
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    ack: Ack
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("include_tables", "exclude_tables", "operations", "transaction_boundaries", "logical_messages", "batch", "client_name", "snapshot")
    INCLUDE_TABLES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_TABLES_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_BOUNDARIES_FIELD_NUMBER: _ClassVar[int]
    LOGICAL_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    include_tables: _containers.RepeatedScalarFieldContainer[str]
    exclude_tables: _containers.RepeatedScalarFieldContainer[str]
    operations: _containers.RepeatedScalarFieldContainer[Operation]
    transaction_boundaries: bool
    logical_messages: bool
    batch: BatchLimits
    client_name: str
    snapshot: SnapshotRequest
    def __init__(self, include_tables: _Optional[_Iterable[str]] = ..., exclude_tables: _Optional[_Iterable[str]] = ..., operations: _Optional[_Iterable[_Union[Operation, str]]] = ..., transaction_boundaries: _Optional[bool] = ..., logical_messages: _Optional[bool] = ..., batch: _Optional[_Union[BatchLimits, _Mapping]] = ..., client_name: _Optional[str] = ..., snapshot: _Optional[_Union[SnapshotRequest, _Mapping]] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("tables", "mode", "resume_token", "chunk_rows")
    TABLES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ROWS_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedScalarFieldContainer[str]
    mode: SnapshotMode
    resume_token: bytes
    chunk_rows: int
    def __init__(self, tables: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[SnapshotMode, str]] = ..., resume_token: _Optional[bytes] = ..., chunk_rows: _Optional[int] = ...) -> None: ...

class BatchLimits(_message.Message):
    __slots__ = ("max_events", "max_bytes", "max_delay_ms")
    MAX_EVENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    max_events: int
    max_bytes: int
    max_delay_ms: int
    def __init__(self, max_events: _Optional[int] = ..., max_bytes: _Optional[int] = ..., max_delay_ms: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("lsn",)
    LSN_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    def __init__(self, lsn: _Optional[int] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("batch", "progress")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    batch: Batch
    progress: SnapshotProgress
    def __init__(self, batch: _Optional[_Union[Batch, _Mapping]] = ..., progress: _Optional[_Union[SnapshotProgress, _Mapping]] = ...) -> None: ...

class SnapshotProgress(_message.Message):
    __slots__ = ("table", "state", "rows_sent", "rows_estimate", "position", "resume_token", "done", "rows_superseded", "chunks", "retries")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ROWS_SENT_FIELD_NUMBER: _ClassVar[int]
    ROWS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ROWS_SUPERSEDED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    table: str
    state: SnapshotState
    rows_sent: int
    rows_estimate: int
    position: int
    resume_token: bytes
    done: bool
    rows_superseded: int
    chunks: int
    retries: int
    def __init__(self, table: _Optional[str] = ..., state: _Optional[_Union[SnapshotState, str]] = ..., rows_sent: _Optional[int] = ..., rows_estimate: _Optional[int] = ..., position: _Optional[int] = ..., resume_token: _Optional[bytes] = ..., done: _Optional[bool] = ..., rows_superseded: _Optional[int] = ..., chunks: _Optional[int] = ..., retries: _Optional[int] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("relations", "events")
    RELATIONS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    relations: _containers.RepeatedCompositeFieldContainer[Relation]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, relations: _Optional[_Iterable[_Union[Relation, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class Relation(_message.Message):
    __slots__ = ("relation_id", "schema", "table", "replica_identity", "columns")
    RELATION_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    relation_id: int
    schema: str
    table: str
    replica_identity: ReplicaIdentity
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    def __init__(self, relation_id: _Optional[int] = ..., schema: _Optional[str] = ..., table: _Optional[str] = ..., replica_identity: _Optional[_Union[ReplicaIdentity, str]] = ..., columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ...) -> None: ...

class Column(_message.Message):
    __slots__ = ("name", "type_oid", "type_name", "type_modifier", "is_key")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_OID_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_MODIFIER_FIELD_NUMBER: _ClassVar[int]
    IS_KEY_FIELD_NUMBER: _ClassVar[int]
    name: str
    type_oid: int
    type_name: str
    type_modifier: int
    is_key: bool
    def __init__(self, name: _Optional[str] = ..., type_oid: _Optional[int] = ..., type_name: _Optional[str] = ..., type_modifier: _Optional[int] = ..., is_key: _Optional[bool] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("op", "lsn", "xid", "commit_lsn", "commit_time_us", "ordinal", "relation_id", "new", "old", "old_row", "truncate", "message", "end_lsn")
    OP_FIELD_NUMBER: _ClassVar[int]
    LSN_FIELD_NUMBER: _ClassVar[int]
    XID_FIELD_NUMBER: _ClassVar[int]
    COMMIT_LSN_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    RELATION_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_FIELD_NUMBER: _ClassVar[int]
    OLD_FIELD_NUMBER: _ClassVar[int]
    OLD_ROW_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    END_LSN_FIELD_NUMBER: _ClassVar[int]
    op: Operation
    lsn: int
    xid: int
    commit_lsn: int
    commit_time_us: int
    ordinal: int
    relation_id: int
    new: Row
    old: Row
    old_row: OldRow
    truncate: Truncate
    message: LogicalMessage
    end_lsn: int
    def __init__(self, op: _Optional[_Union[Operation, str]] = ..., lsn: _Optional[int] = ..., xid: _Optional[int] = ..., commit_lsn: _Optional[int] = ..., commit_time_us: _Optional[int] = ..., ordinal: _Optional[int] = ..., relation_id: _Optional[int] = ..., new: _Optional[_Union[Row, _Mapping]] = ..., old: _Optional[_Union[Row, _Mapping]] = ..., old_row: _Optional[_Union[OldRow, str]] = ..., truncate: _Optional[_Union[Truncate, _Mapping]] = ..., message: _Optional[_Union[LogicalMessage, _Mapping]] = ..., end_lsn: _Optional[int] = ...) -> None: ...

class Row(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("null", "unchanged_toast", "bool", "int64", "double", "numeric", "text", "bytes", "json", "timestamp_us", "timestamptz_us", "date_days", "time_us", "array")
    NULL_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_TOAST_FIELD_NUMBER: _ClassVar[int]
    BOOL_FIELD_NUMBER: _ClassVar[int]
    INT64_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_US_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPTZ_US_FIELD_NUMBER: _ClassVar[int]
    DATE_DAYS_FIELD_NUMBER: _ClassVar[int]
    TIME_US_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    null: bool
    unchanged_toast: bool
    bool: bool
    int64: int
    double: float
    numeric: str
    text: str
    bytes: bytes
    json: str
    timestamp_us: int
    timestamptz_us: int
    date_days: int
    time_us: int
    array: Array
    def __init__(self, null: _Optional[bool] = ..., unchanged_toast: _Optional[bool] = ..., bool: _Optional[bool] = ..., int64: _Optional[int] = ..., double: _Optional[float] = ..., numeric: _Optional[str] = ..., text: _Optional[str] = ..., bytes: _Optional[bytes] = ..., json: _Optional[str] = ..., timestamp_us: _Optional[int] = ..., timestamptz_us: _Optional[int] = ..., date_days: _Optional[int] = ..., time_us: _Optional[int] = ..., array: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...

class Array(_message.Message):
    __slots__ = ("elements",)
    ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    elements: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, elements: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class Truncate(_message.Message):
    __slots__ = ("relation_ids", "cascade", "restart_identity")
    RELATION_IDS_FIELD_NUMBER: _ClassVar[int]
    CASCADE_FIELD_NUMBER: _ClassVar[int]
    RESTART_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    relation_ids: _containers.RepeatedScalarFieldContainer[int]
    cascade: bool
    restart_identity: bool
    def __init__(self, relation_ids: _Optional[_Iterable[int]] = ..., cascade: _Optional[bool] = ..., restart_identity: _Optional[bool] = ...) -> None: ...

class LogicalMessage(_message.Message):
    __slots__ = ("prefix", "content", "transactional")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONAL_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    content: bytes
    transactional: bool
    def __init__(self, prefix: _Optional[str] = ..., content: _Optional[bytes] = ..., transactional: _Optional[bool] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("slot", "temporary", "confirmed_lsn", "written_lsn", "lag_bytes", "connected_clients", "server_version", "walstream_version", "streaming", "pgoutput_version", "sinks", "snapshots")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    TEMPORARY_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_LSN_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_LSN_FIELD_NUMBER: _ClassVar[int]
    LAG_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    WALSTREAM_VERSION_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    PGOUTPUT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SINKS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    slot: str
    temporary: bool
    confirmed_lsn: int
    written_lsn: int
    lag_bytes: int
    connected_clients: int
    server_version: str
    walstream_version: str
    streaming: bool
    pgoutput_version: int
    sinks: _containers.RepeatedCompositeFieldContainer[SinkStatus]
    snapshots: _containers.RepeatedCompositeFieldContainer[SnapshotStatus]
    def __init__(self, slot: _Optional[str] = ..., temporary: _Optional[bool] = ..., confirmed_lsn: _Optional[int] = ..., written_lsn: _Optional[int] = ..., lag_bytes: _Optional[int] = ..., connected_clients: _Optional[int] = ..., server_version: _Optional[str] = ..., walstream_version: _Optional[str] = ..., streaming: _Optional[bool] = ..., pgoutput_version: _Optional[int] = ..., sinks: _Optional[_Iterable[_Union[SinkStatus, _Mapping]]] = ..., snapshots: _Optional[_Iterable[_Union[SnapshotStatus, _Mapping]]] = ...) -> None: ...

class SinkStatus(_message.Message):
    __slots__ = ("url", "connected", "published", "acked", "retries", "in_flight", "queued")
    URL_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    ACKED_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    url: str
    connected: bool
    published: int
    acked: int
    retries: int
    in_flight: int
    queued: int
    def __init__(self, url: _Optional[str] = ..., connected: _Optional[bool] = ..., published: _Optional[int] = ..., acked: _Optional[int] = ..., retries: _Optional[int] = ..., in_flight: _Optional[int] = ..., queued: _Optional[int] = ...) -> None: ...

class SnapshotStatus(_message.Message):
    __slots__ = ("client", "table", "rows_sent", "rows_estimate", "chunks", "rows_superseded", "retries")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ROWS_SENT_FIELD_NUMBER: _ClassVar[int]
    ROWS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    ROWS_SUPERSEDED_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    client: str
    table: str
    rows_sent: int
    rows_estimate: int
    chunks: int
    rows_superseded: int
    retries: int
    def __init__(self, client: _Optional[str] = ..., table: _Optional[str] = ..., rows_sent: _Optional[int] = ..., rows_estimate: _Optional[int] = ..., chunks: _Optional[int] = ..., rows_superseded: _Optional[int] = ..., retries: _Optional[int] = ...) -> None: ...
