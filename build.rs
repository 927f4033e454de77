//! Finds oneDNN (the matrix backend, see src/linalg) and the OpenMP runtime it
//! is built with, so that a missing library is a clear build error naming the
//! package to install, not a linker message.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=DNNL_LIB_DIR");
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(d) = std::env::var("DNNL_LIB_DIR") {
        dirs.push(d.into());
    }
    let multiarch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    for d in [
        format!("/usr/lib/{multiarch}"),
        "/usr/lib".into(),
        "/usr/local/lib".into(),
        "/usr/lib64".into(),
    ] {
        dirs.push(d.into());
    }
    let found = |lib: &str| -> Option<&Path> {
        dirs.iter()
            .map(|d| d.as_path())
            .find(|d| d.join(format!("lib{lib}.so")).exists())
    };
    let Some(dnnl) = found("dnnl") else {
        panic!(
            "coact needs oneDNN (libdnnl.so) for its matrix products and did not find it in {:?}. \
             Install it with `make setup` (which runs `apt-get install libdnnl-dev`), or set \
             DNNL_LIB_DIR to the folder that holds libdnnl.so.",
            dirs
        );
    };
    println!("cargo:rustc-link-search=native={}", dnnl.display());
    // libgomp (linked by src/linalg/dnnl.rs) is on gcc's own search path.
    println!("cargo:rerun-if-changed=build.rs");
}
