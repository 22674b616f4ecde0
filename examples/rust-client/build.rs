// Generates the message structs (prost) from the repository's one copy of the contract.
// prost-build runs protoc: from $PROTOC, else from PATH (Debian: protobuf-compiler).
fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=../../proto/plugin.proto");
    prost_build::compile_protos(&["../../proto/plugin.proto"], &["../../proto"])
}
