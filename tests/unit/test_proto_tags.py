"""The generated tag table (walstream._proto.tags and _native/_tags.h, from scripts/gen_proto.py) against
what protobuf itself writes: every field of walstream.v1 and of the seed API (plugin), set alone, serialises
starting with its tag."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import descriptor as d
from google.protobuf.message import Message

from walstream._proto import plugin_pb2, tags, walstream_v1_pb2
from walstream.delivery.v1.wire import varint

HEADER = Path(__file__).resolve().parents[2] / "src" / "walstream" / "_native" / "_tags.h"


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def _set_alone(message: Message, field: d.FieldDescriptor) -> None:
    """Give `field` a non-default value, so proto3 writes it."""
    is_message = field.type == d.FieldDescriptor.TYPE_MESSAGE
    value: object = {d.FieldDescriptor.TYPE_STRING: "x", d.FieldDescriptor.TYPE_BYTES: b"x",
                     d.FieldDescriptor.TYPE_BOOL: True, d.FieldDescriptor.TYPE_DOUBLE: 1.5,
                     d.FieldDescriptor.TYPE_FLOAT: 1.5}.get(field.type, 1)
    container = getattr(message, field.name)
    if field.is_repeated:
        container.add() if is_message else container.append(value)
    elif is_message:
        container.SetInParent()
    else:
        setattr(message, field.name, value)


MODULES = {"walstream.v1": (walstream_v1_pb2, ""), "plugin": (plugin_pb2, "PLUGIN_")}
FIELDS = [(m, f) for module, _ in MODULES.values() for m in module.DESCRIPTOR.message_types_by_name.values()
          for f in m.fields]


@pytest.mark.parametrize(("message", "field"), FIELDS, ids=[f"{m.full_name}.{f.name}" for m, f in FIELDS])
def test_every_field_serialises_with_the_generated_tag(message: d.Descriptor, field: d.FieldDescriptor) -> None:
    module, prefix = MODULES[message.file.package]
    instance = getattr(module, message.name)()
    _set_alone(instance, field)
    tag = getattr(tags, f"{prefix}{_snake(message.name)}_{field.name.upper()}")
    assert instance.SerializeToString().startswith(varint(tag))


def test_the_c_header_is_the_same_table() -> None:
    defined = {name: int(value, 16) for name, value in
               re.findall(r"^#define TAG_(\w+) (0x[0-9A-F]+)", HEADER.read_text(), re.M)}
    expected = {name: value for name, value in vars(tags).items() if name.isupper() and value < 0x80}
    assert defined == expected
    assert len(expected) == len(FIELDS)  # every walstream.v1 field has a one-byte tag today
