// Generates the messages (prost) and the client (tonic) from the repository's one copy of the
// contract, into OUT_DIR; src/main.rs includes them with tonic::include_proto!. Runs protoc: from
// $PROTOC, else from PATH (Debian: protobuf-compiler). Reruns when the proto file changes.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["../../proto/plugin.proto"], &["../../proto"])?;
    Ok(())
}
