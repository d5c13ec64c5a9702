//! What every privileged test shares: the root check and running `ip`.

use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result, ensure};

/// Whether privileged tests run: true as root; false only with `SKIFF_SKIP_PRIVILEGED=1`;
/// otherwise the test fails, saying `what` needs root.
pub fn privileged(what: &str) -> bool {
    if std::env::var("SKIFF_SKIP_PRIVILEGED").as_deref() == Ok("1") {
        eprintln!("SKIFF_SKIP_PRIVILEGED=1: skipping a privileged {what} test");
        return false;
    }
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    assert_eq!(
        uid, 0,
        "{what} tests need root (network namespaces, cgroups, mounts); run as root or set SKIFF_SKIP_PRIVILEGED=1"
    );
    true
}

/// Runs `ip ARGS`, failing with its stderr; returns its stdout.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .context("run ip")?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
