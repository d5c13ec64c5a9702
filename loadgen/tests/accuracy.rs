//! Accuracy against the reference tools: `skiff bench` and wrk (HTTP/1.1) or h2load (HTTP/2),
//! run interleaved against the same loopback nginx, agree on throughput within 10%. The client
//! is pinned to CPU 0 and nginx to CPU 1, so neither starves the other.
//!
//! Release build only (a debug client is the bottleneck by design of the comparison):
//! `cargo test --release -p skiff-loadgen --test accuracy -- --ignored --nocapture`

mod support;

use std::time::Duration;

use skiff_loadgen::{Config, Protocol};
use support::{Nginx, number_after, pin_self, run, run_tool};

/// Short interleaved rounds, judged by their median ratio: a burst of load from elsewhere on the
/// machine spoils one round, not the verdict.
const ROUNDS: usize = 5;
const SECONDS: u64 = 2;
const CONNECTIONS: usize = 10;

struct Totals {
    ours_rps: f64,
    peer_rps: f64,
    ours_cpu_us: f64,
    peer_cpu_us: f64,
}

fn compare(
    protocol: Protocol,
    url: &str,
    streams: usize,
    peer: impl Fn() -> anyhow::Result<(f64, f64)>,
) -> anyhow::Result<Totals> {
    let mut ratios = Vec::new();
    let mut t = Totals {
        ours_rps: 0.0,
        peer_rps: 0.0,
        ours_cpu_us: 0.0,
        peer_cpu_us: 0.0,
    };
    for round in 0..ROUNDS {
        let mut config = Config::new(protocol, url);
        config.connections = CONNECTIONS;
        config.streams = streams;
        config.duration = Duration::from_secs(SECONDS);
        let ours = run(config, 1)?;
        anyhow::ensure!(
            ours.completed && ours.errors.total == 0,
            "{}",
            ours.summary()
        );
        let (peer_rps, peer_cpu_s) = peer()?;
        let peer_cpu_us = peer_cpu_s * 1e6 / (peer_rps * SECONDS as f64);
        eprintln!(
            "round {round}: skiff bench {:.0} req/s ({:.2} µs CPU/req, {:.0}% CPU), peer {peer_rps:.0} req/s ({peer_cpu_us:.2} µs CPU/req)",
            ours.throughput, ours.client_cpu.us_per_request, ours.client_cpu.percent
        );
        ratios.push(ours.throughput / peer_rps);
        t.ours_rps += ours.throughput;
        t.peer_rps += peer_rps;
        t.ours_cpu_us += ours.client_cpu.us_per_request / ROUNDS as f64;
        t.peer_cpu_us += peer_cpu_us / ROUNDS as f64;
    }
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ROUNDS / 2];
    eprintln!(
        "{} median throughput ratio skiff/peer {ratio:.3} (rounds {ratios:.3?}); CPU per request skiff {:.2} µs, peer {:.2} µs",
        protocol.name(),
        t.ours_cpu_us,
        t.peer_cpu_us
    );
    anyhow::ensure!(
        (0.9..=1.1).contains(&ratio),
        "throughput differs by more than 10% (median ratio {ratio:.3}): skiff {:.0} req/s, peer {:.0} req/s on average",
        t.ours_rps / ROUNDS as f64,
        t.peer_rps / ROUNDS as f64
    );
    Ok(t)
}

#[test]
#[ignore = "release build: cargo test --release -p skiff-loadgen --test accuracy -- --ignored"]
fn http1_throughput_agrees_with_wrk() -> anyhow::Result<()> {
    pin_self(0)?;
    let nginx = Nginx::start(1)?;
    let url = format!("http://127.0.0.1:{}/", nginx.http);
    compare(Protocol::Http, &url, 1, || {
        let (out, cpu) = run_tool(
            "taskset",
            &[
                "-c",
                "0",
                "wrk",
                "-t1",
                &format!("-c{CONNECTIONS}"),
                &format!("-d{SECONDS}s"),
                &url,
            ],
        )?;
        let rps = number_after(&out, "Requests/sec:")
            .ok_or_else(|| anyhow::anyhow!("no Requests/sec in wrk's output:\n{out}"))?;
        Ok((rps, cpu))
    })?;
    Ok(())
}

#[test]
#[ignore = "release build: cargo test --release -p skiff-loadgen --test accuracy -- --ignored"]
fn h2_throughput_agrees_with_h2load() -> anyhow::Result<()> {
    pin_self(0)?;
    let nginx = Nginx::start(1)?;
    let url = format!("http://127.0.0.1:{}/", nginx.h2c);
    let streams = 10;
    compare(Protocol::H2, &url, streams, || {
        let (out, cpu) = run_tool(
            "taskset",
            &[
                "-c",
                "0",
                "h2load",
                "-t1",
                &format!("-c{CONNECTIONS}"),
                &format!("-m{streams}"),
                "--warm-up-time=1",
                &format!("-D{SECONDS}"),
                &url,
            ],
        )?;
        // "finished in 3.00s, 41234.00 req/s, 1.2MB/s"
        let rps = out
            .lines()
            .find(|l| l.starts_with("finished in"))
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|part| part.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .ok_or_else(|| anyhow::anyhow!("no req/s in h2load's output:\n{out}"))?;
        // h2load's CPU includes its 1 s warm-up.
        Ok((rps, cpu * SECONDS as f64 / (SECONDS + 1) as f64))
    })?;
    Ok(())
}
