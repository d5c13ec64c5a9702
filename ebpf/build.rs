//! Compiles every `bpf/*.c` into a BPF object in OUT_DIR with clang, for `include_bytes_aligned!`.

use std::{env, path::PathBuf, process::Command};

fn main() {
    if let Err(message) = run() {
        // A build script reports by failing; print the reason where cargo shows it.
        eprintln!("error: skiff-ebpf: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let bpf_dir = manifest.join("bpf");
    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    println!("cargo:rerun-if-env-changed=SKIFF_CLANG");

    // Debian keeps <asm/types.h> (pulled in by <linux/types.h>) under the target triple's
    // include dir; pointing clang there replaces gcc-multilib. Follow the *target* arch so a
    // cross build finds its own headers.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").map_err(|e| e.to_string())?;
    let triple_dir = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        other => return Err(format!("no known include dir for target arch {other}")),
    };
    let clang = env::var("SKIFF_CLANG").unwrap_or_else(|_| "clang".to_owned());

    let mut sources: Vec<PathBuf> = std::fs::read_dir(&bpf_dir)
        .map_err(|e| format!("{}: {e}", bpf_dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    sources.sort();
    for source in &sources {
        // headers are inputs too: a change to one must rebuild
        println!("cargo:rerun-if-changed={}", source.display());
    }
    for source in sources
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
    {
        let stem = source
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("odd file name {}", source.display()))?;
        let object = out.join(format!("{stem}.o"));
        let output = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{triple_dir}"))
            .arg("-I")
            .arg(&bpf_dir)
            .arg("-c")
            .arg(source)
            .arg("-o")
            .arg(&object)
            .output()
            .map_err(|e| {
                format!(
                    "cannot run `{clang}` ({e}): the BPF programs are compiled with clang. \
                     Install it with `apt-get install clang libbpf-dev` (scripts/bootstrap does)"
                )
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let hint = if stderr.contains("bpf/bpf_helpers.h") || stderr.contains("asm/types.h") {
                "\nmissing headers: `apt-get install clang libbpf-dev` (scripts/bootstrap does)"
            } else {
                ""
            };
            return Err(format!(
                "clang failed on {}:\n{stderr}{hint}",
                source.display()
            ));
        }
    }
    Ok(())
}
