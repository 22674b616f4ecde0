from collections.abc import Callable

from walstream.source.messages import Cell, TupleData

K_SLOW: int
K_SINT64: int
K_NUMERIC: int
K_TEXT: int
K_JSON: int
K_BOOL: int

def encode_row(cells: TupleData, kinds: bytes, slow: tuple[object, ...], /) -> bytes | None: ...
def configure(cell: type[Cell], null_cell: Cell, unchanged_cell: Cell,
              fallback: Callable[[bytes], tuple[int, TupleData] | None], /) -> None: ...
def plain_insert(buf: bytes, /) -> tuple[int, TupleData] | None: ...
def set_libpq(get_copy_data: int, freemem: int, /) -> None: ...
def read_copy_data(conn: int, /) -> tuple[int, bytes] | bytes | int: ...
