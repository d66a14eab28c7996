fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "corral/v1/codebase.proto",
        "corral/v1/sandbox.proto",
        "corral/v1/exec.proto",
        "corral/v1/files.proto",
        "corral/v1/session.proto",
        "corral/v1/languages.proto",
        "corral/v1/jobs.proto",
    ];
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("corral_descriptor.bin"))
        .compile_protos(&protos, &["."])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
