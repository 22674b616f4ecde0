"""Regenerate the gRPC stubs in src/walstream/_proto from proto/*.proto (run: make proto), and the table of
protobuf tags of walstream.v1 that the hand-framed encoders write: src/walstream/_proto/tags.py for Python and
src/walstream/_native/_tags.h for the C accelerator, so no encoder spells a tag by hand.

The output is committed; `make lint` runs this script with --check, which fails when it no longer matches.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "src" / "walstream" / "_proto"
HEADER = "# DO NOT EDIT: generated from proto/{name} by scripts/gen_proto.py (make proto).\n"
C_HEADER_PATH = ROOT / "src" / "walstream" / "_native" / "_tags.h"
# The protos whose messages are framed by hand, and the prefix of their names in the table.
TAGGED_PROTOS = {"walstream_v1.proto": "", "plugin.proto": "PLUGIN_"}

# Wire types (protobuf encoding): 0 varint, 1 fixed 64-bit, 2 length-delimited, 5 fixed 32-bit.
_FIXED64 = {"TYPE_DOUBLE", "TYPE_FIXED64", "TYPE_SFIXED64"}
_FIXED32 = {"TYPE_FLOAT", "TYPE_FIXED32", "TYPE_SFIXED32"}
_DELIMITED = {"TYPE_STRING", "TYPE_BYTES", "TYPE_MESSAGE"}


def _wire_type(field: Any) -> int:
    from google.protobuf import descriptor_pb2

    type_name = descriptor_pb2.FieldDescriptorProto.Type.Name(field.type)
    if field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED and type_name not in _DELIMITED:
        return 2  # proto3 packs repeated scalars
    if type_name in _DELIMITED:
        return 2
    return 1 if type_name in _FIXED64 else 5 if type_name in _FIXED32 else 0


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def tag_table(proto: Path, prefix: str = "") -> list[tuple[str, int, str]]:
    """(NAME, tag, what) for every field of every message of `proto`: NAME is prefix + MESSAGE_FIELD, the
    tag is field number << 3 | wire type (written as a varint before the field's value)."""
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        if protoc.main(["protoc", f"-I{PROTO_DIR}", f"--descriptor_set_out={out}", str(proto)]) != 0:
            raise SystemExit("protoc failed")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    table = []
    for message in files.file[0].message_type:
        for f in message.field:
            wire = _wire_type(f)
            table.append((f"{prefix}{_snake(message.name)}_{f.name.upper()}", f.number << 3 | wire,
                          f"{files.file[0].package}.{message.name}.{f.name} = {f.number}, wire type {wire}"))
    return table


def all_tags() -> list[tuple[str, int, str]]:
    return [row for name, prefix in TAGGED_PROTOS.items() for row in tag_table(PROTO_DIR / name, prefix)]


def render_tags(table: list[tuple[str, int, str]]) -> tuple[str, str]:
    """The Python module and the C header of the same table."""
    names = " and ".join(f"proto/{name}" for name in TAGGED_PROTOS)
    py = [f"# DO NOT EDIT: generated from {names} by scripts/gen_proto.py (make proto).",
          '"""Protobuf tags (field number << 3 | wire type) for the encoders that frame messages by hand',
          '(delivery/v1/wire.py, adapter.py, service.py, delivery/seed/service.py, snapshot/runner.py;',
          '_native/_tags.h is the same table for C). plugin.proto\'s (the seed API) are prefixed PLUGIN_."""',
          "", "from typing import Final", ""]
    c = [f"/* DO NOT EDIT: generated from {names} by scripts/gen_proto.py (make proto). */",
         "/* Protobuf tags (field number << 3 | wire type) of one byte (field numbers below 16),",
         "   the same table as walstream/_proto/tags.py. */",
         "#ifndef WALSTREAM_TAGS_H", "#define WALSTREAM_TAGS_H", ""]
    for name, tag, what in table:
        py.append(f"{name}: Final = 0x{tag:02X}  # {what}")
        if tag < 0x80:
            c.append(f"#define TAG_{name} 0x{tag:02X} /* {what} */")
    c += ["", "#endif", ""]
    return "\n".join(py) + "\n", "\n".join(c)


def generate(out_dir: Path) -> list[Path]:
    from grpc_tools import protoc  # dev dependency only

    protos = sorted(PROTO_DIR.glob("*.proto"))
    args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}", *[str(p) for p in protos]]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = []
    for path in sorted(out_dir.glob("*_pb2*.py*")):
        text = path.read_text()
        # protoc writes absolute sibling imports; the stubs live inside a package.
        text = re.sub(r"^import (\w+_pb2) as ", r"from . import \1 as ", text, flags=re.M)
        proto_name = re.sub(r"_pb2(_grpc)?\.pyi?$", ".proto", path.name)
        path.write_text(HEADER.format(name=proto_name) + text)
        written.append(path)
    (out_dir / "__init__.py").write_text(HEADER.format(name="*.proto"))
    py, c = render_tags(all_tags())
    (out_dir / "tags.py").write_text(py)
    written.append(out_dir / "tags.py")
    return written


def main() -> None:
    check = "--check" in sys.argv
    if not check:
        for old in OUT_DIR.glob("*_pb2*.py*"):
            old.unlink()
        generate(OUT_DIR)
        C_HEADER_PATH.write_text(render_tags(all_tags())[1])
        return
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p.read_text() for p in generate(Path(tmp))}
    fresh[C_HEADER_PATH.name] = render_tags(all_tags())[1]
    committed = {p.name: p.read_text() for p in [*OUT_DIR.glob("*_pb2*.py*"), OUT_DIR / "tags.py", C_HEADER_PATH]
                 if p.exists()}
    if fresh != committed:
        raise SystemExit("generated stubs are stale: run `make proto` and commit the result")


if __name__ == "__main__":
    main()
