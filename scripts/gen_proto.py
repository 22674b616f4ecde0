"""Regenerate the gRPC stubs in src/walstream/_proto from proto/*.proto (run: make proto).

The output is committed; tests/unit/test_proto_fresh.py fails when it no longer matches this script's output.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "src" / "walstream" / "_proto"
HEADER = "# DO NOT EDIT: generated from proto/{name} by scripts/gen_proto.py (make proto).\n"


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
    return written


def main() -> None:
    check = "--check" in sys.argv
    if not check:
        for old in OUT_DIR.glob("*_pb2*.py*"):
            old.unlink()
        generate(OUT_DIR)
        return
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p.read_text() for p in generate(Path(tmp))}
    committed = {p.name: p.read_text() for p in OUT_DIR.glob("*_pb2*.py*")}
    if fresh != committed:
        raise SystemExit("generated stubs are stale: run `make proto` and commit the result")


if __name__ == "__main__":
    main()
