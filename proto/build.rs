fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps the build free of system packages.
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("claw_descriptor.bin"))
        .compile_protos(&["proto/claw.proto", "proto/raft.proto"], &["proto"])?;
    // etcd's KV client, for the side-by-side benchmark only: no server, and
    // kept out of the descriptor set that reflection serves.
    tonic_prost_build::configure().build_server(false).compile_protos(&["proto/etcd/rpc.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
