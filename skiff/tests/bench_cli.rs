//! `skiff bench` as users run it: the real binary against the built-in `skiff grpc-echo` on
//! loopback; exit status, the JSON file (also partial), interrupts and the plot command.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::ensure;

mod support;

use support::{GrpcEcho, SKIFF, free_port, json};

fn bench(args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(SKIFF)
        .arg("bench")
        .args(args)
        .arg("--quiet")
        .output()?)
}

#[test]
fn grpc_echo_bench_writes_json_and_a_wrong_method_fails() -> anyhow::Result<()> {
    let echo = GrpcEcho::start()?;
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("good.json");
    let target = format!("127.0.0.1:{}", echo.port);
    let out = bench(&[
        "grpc",
        &target,
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--connections",
        "2",
        "--streams",
        "2",
        "--json",
        good.to_str().unwrap_or_default(),
    ])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(stdout.contains("p99.9"), "{stdout}");
    let v = json(&good)?;
    ensure!(
        v["completed"] == true && v["throughput"].as_f64() > Some(0.0),
        "{v}"
    );
    for key in ["p50", "p90", "p99", "p999", "max"] {
        ensure!(v["latency_us"][key].as_f64() > Some(0.0), "{key}: {v}");
    }
    ensure!(v["errors"]["total"] == 0, "{v}");
    ensure!(v["client_cpu"]["percent"].is_number(), "{v}");

    let bad = dir.path().join("bad.json");
    let out = bench(&[
        "grpc",
        &target,
        "--duration",
        "1s",
        "--method",
        "/skiff.echo.v1.Echo/Nope",
        "--json",
        bad.to_str().unwrap_or_default(),
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "a wrong method must fail the run");
    ensure!(
        stderr.contains("UNIMPLEMENTED") && stderr.contains("/skiff.echo.v1.Echo/Nope"),
        "{stderr}"
    );
    ensure!(stderr.contains("partial results in"), "{stderr}");
    ensure!(json(&bad)?["completed"] == false);

    // The two runs, plotted.
    let svg = dir.path().join("plot.svg");
    let out = Command::new(SKIFF)
        .args(["bench", "plot"])
        .arg(&good)
        .arg(&good)
        .args(["--label", "first", "--label", "second", "-o"])
        .arg(&svg)
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg)?;
    ensure!(text.contains("first") && text.contains("second"));
    // The failed run has nothing to plot, and says so.
    let out = Command::new(SKIFF)
        .args(["bench", "plot"])
        .arg(&bad)
        .arg("-o")
        .arg(&svg)
        .output()?;
    ensure!(!out.status.success());
    ensure!(String::from_utf8_lossy(&out.stderr).contains("no answered requests"));
    Ok(())
}

#[test]
fn an_unreachable_target_fails_with_the_reason_and_partial_json() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("r.json");
    let port = free_port()?;
    let out = bench(&[
        "http",
        &format!("http://127.0.0.1:{port}/"),
        "--duration",
        "1s",
        "--json",
        file.to_str().unwrap_or_default(),
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success());
    ensure!(
        stderr.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{stderr}"
    );
    let v = json(&file)?;
    ensure!(
        v["completed"] == false && v["error"].as_str().is_some_and(|e| e.contains("refused")),
        "{v}"
    );
    let out = bench(&[
        "http",
        "http://127.0.0.1:1/",
        "--connections",
        "0",
        "--json",
        file.to_str().unwrap_or_default(),
    ])?;
    ensure!(!out.status.success());
    ensure!(String::from_utf8_lossy(&out.stderr).contains("--connections"));
    let v = json(&file)?;
    ensure!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("--connections")),
        "{v}"
    );
    Ok(())
}

#[test]
fn an_interrupt_stops_the_run_and_keeps_partial_results() -> anyhow::Result<()> {
    let echo = GrpcEcho::start()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("r.json");
    let child = Command::new(SKIFF)
        .args(["bench", "tcp", &format!("127.0.0.1:{}", echo.port)])
        .args([
            "--duration",
            "60s",
            "--warmup",
            "100ms",
            "--connections",
            "1",
            "--quiet",
            "--json",
        ])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(1500));
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT)?;
    let out = child.wait_with_output()?;
    ensure!(
        !out.status.success(),
        "an interrupted run is not a completed one"
    );
    ensure!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
    let v = json(&file)?;
    ensure!(v["interrupted"] == true && v["completed"] == false, "{v}");
    ensure!(v["requests"].as_u64() > Some(0), "{v}");
    ensure!(v["duration_s"].as_f64() < Some(30.0), "{v}");
    Ok(())
}
