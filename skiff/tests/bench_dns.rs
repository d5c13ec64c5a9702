//! `skiff bench dns` as users run it, over UDP and over TCP (`--tcp`), against skiff's own DNS
//! server (skiff-dns serving the benchmark cluster, in-process on a loopback port): answers,
//! error answers by kind, an unreachable target and refused flags, with the JSON file.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use skiff_dns::{DnsConfig, DnsServer, ForwardConfig, Index, PodRecords, ZoneSettings, fixtures};

mod support;

use support::{SKIFF, free_port, json};

/// skiff-dns serving 100 benchmark Services (`svc-N.ns-N.svc.cluster.local`) on a free loopback
/// port, UDP and TCP, on its own thread until the test process ends.
fn start_dns() -> anyhow::Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let serve = async {
            let settings = ZoneSettings::new("cluster.local", 5, PodRecords::Insecure)?;
            let model = fixtures::bench_cluster(100);
            let config = DnsConfig {
                listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
                pods: settings.pods,
                udp_sockets: 1,
                // Nothing here leaves the cluster zone: no upstreams, no packet off the machine.
                forward: ForwardConfig::default(),
                ..DnsConfig::default()
            };
            let server = DnsServer::bind(config).await?;
            server.install_snapshot(Index::from_model(&settings, &model).snapshot());
            let _ = tx.send(Ok(server.local_addrs()[0]));
            server.serve(std::future::pending::<()>()).await?;
            anyhow::Ok(())
        };
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(serve));
        if let Err(e) = result {
            let _ = tx.send(Err(e));
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .context("skiff-dns did not start")?
}

fn bench(args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(SKIFF)
        .args(["bench", "dns"])
        .args(args)
        .args(["--duration", "1s", "--warmup", "200ms", "--quiet"])
        .output()?)
}

#[test]
fn dns_over_udp_and_tcp_against_skiff_dns() -> anyhow::Result<()> {
    let addr = start_dns()?.to_string();
    let dir = tempfile::tempdir()?;
    for (transport, pipeline, extra) in [
        ("udp", 1, &[][..]),
        ("tcp", 4, &["--tcp", "--pipeline", "4"][..]),
    ] {
        let file = dir.path().join(format!("{transport}.json"));
        let mut args = vec![
            addr.as_str(),
            "--qname",
            "svc-1.ns-1.svc.cluster.local.",
            "--connections",
            "2",
            "--json",
            file.to_str().unwrap_or_default(),
        ];
        args.extend_from_slice(extra);
        let out = bench(&args)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "{transport}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            stdout.contains(&format!("dns over {transport}")),
            "{stdout}"
        );
        let v = json(&file)?;
        ensure!(
            v["transport"] == transport && v["pipeline"] == pipeline,
            "{v}"
        );
        ensure!(v["completed"] == true && v["errors"]["total"] == 0, "{v}");
        ensure!(v["throughput"].as_f64() > Some(0.0), "{v}");
        ensure!(v["latency_us"]["p99"].as_f64() > Some(0.0), "{v}");
    }

    // A name the zone does not have: NXDOMAIN, named, and the (empty) results still written.
    let file = dir.path().join("nx.json");
    let out = bench(&[
        &addr,
        "--tcp",
        "--qname",
        "nope.ns-1.svc.cluster.local.",
        "--json",
        file.to_str().unwrap_or_default(),
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "an NXDOMAIN run must fail");
    ensure!(
        stderr.contains("NXDOMAIN") && stderr.contains("nope.ns-1"),
        "{stderr}"
    );
    let v = json(&file)?;
    ensure!(v["completed"] == false && v["transport"] == "tcp", "{v}");
    Ok(())
}

#[test]
fn dns_over_tcp_bad_input_is_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("r.json");
    let port = free_port()?;
    let target = format!("127.0.0.1:{port}");
    let out = bench(&[
        &target,
        "--tcp",
        "--json",
        file.to_str().unwrap_or_default(),
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success());
    ensure!(
        stderr.contains(&format!("cannot connect to {target}")) && stderr.contains("refused"),
        "{stderr}"
    );
    let v = json(&file)?;
    ensure!(v["completed"] == false && v["requests"] == 0, "{v}");

    // Pipelining needs TCP; --tcp is for dns only.
    let out = bench(&[&target, "--pipeline", "4"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("--pipeline") && stderr.contains("--tcp"),
        "{stderr}"
    );
    let out = Command::new(SKIFF)
        .args(["bench", "udp", &target, "--tcp", "--quiet"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("--tcp: only for dns runs"),
        "{stderr}"
    );
    Ok(())
}
