//! Golden tests: `golden/<case>.yaml` (Services and EndpointSlices as users write them) compiled
//! for a fixed node must render exactly as `golden/<case>.table`. `SKIFF_BLESS=1` rewrites the
//! expectations instead of comparing.

use std::path::Path;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use skiff_api::{Object, Strictness, parse_manifests};
use skiff_proxy::{NodeInfo, ServiceTable};

/// The node every case is compiled for: `node-a` in `zone-a`, one address per family.
fn node() -> anyhow::Result<NodeInfo> {
    Ok(NodeInfo {
        name: "node-a".into(),
        zone: Some("zone-a".into()),
        addresses: vec!["192.168.0.10".parse()?, "fd00:1::10".parse()?],
    })
}

fn compile(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let mut services: Vec<Service> = Vec::new();
    let mut slices: Vec<EndpointSlice> = Vec::new();
    for m in parse_manifests(&path.display().to_string(), &text, Strictness::Strict)? {
        match m.object {
            Object::Service(s) => services.push(*s),
            Object::EndpointSlice(s) => slices.push(*s),
            other => anyhow::bail!("{}: unexpected {:?}", path.display(), other.kind()),
        }
    }
    // Namespaces are what the API server would fill in.
    for s in &mut services {
        s.metadata.namespace.get_or_insert_with(|| "default".into());
    }
    for s in &mut slices {
        s.metadata.namespace.get_or_insert_with(|| "default".into());
    }
    Ok(ServiceTable::build(&node()?, &services, &slices, None).dump())
}

#[test]
fn golden_tables() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var("SKIFF_BLESS").is_ok_and(|v| v == "1");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    anyhow::ensure!(!cases.is_empty(), "no cases in {}", dir.display());
    let mut failed = Vec::new();
    for case in &cases {
        let got = compile(case)?;
        let expected_path = case.with_extension("table");
        if bless {
            std::fs::write(&expected_path, &got)?;
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            eprintln!(
                "--- {} (expected)\n{expected}\n+++ got\n{got}",
                expected_path.display()
            );
            failed.push(case.display().to_string());
        }
    }
    anyhow::ensure!(
        failed.is_empty(),
        "golden mismatch (SKIFF_BLESS=1 to accept): {failed:?}"
    );
    Ok(())
}
