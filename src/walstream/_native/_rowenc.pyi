from walstream.source.messages import TupleData

K_SLOW: int
K_SINT64: int
K_NUMERIC: int
K_TEXT: int
K_JSON: int
K_BOOL: int

def encode_row(cells: TupleData, kinds: bytes, slow: tuple[object, ...], /) -> bytes | None: ...
