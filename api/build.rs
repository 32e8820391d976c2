//! Compiles `proto/gantry.proto` with protox (pure Rust: no `protoc` on the machine).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/gantry.proto");
    let fds = protox::compile(["gantry.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
