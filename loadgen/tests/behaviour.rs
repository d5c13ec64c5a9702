//! What `skiff bench` measures and how it fails, against loopback servers started here:
//! coordinated-omission correction, every protocol, TLS, gRPC, bad input, and the plot.

mod support;

use std::time::{Duration, Instant};

use skiff_loadgen::{Config, PlotRun, Protocol, Report};
use support::{free_port, run, spawn_stalling_server, spawn_tcp_echo, spawn_udp};

fn short(protocol: Protocol, target: impl Into<String>) -> Config {
    let mut c = Config::new(protocol, target);
    c.duration = Duration::from_millis(1500);
    c.warmup = Duration::from_millis(200);
    c.connections = 2;
    c.timeout = Duration::from_secs(5);
    c
}

fn completed(report: &Report) {
    assert!(report.completed, "{}", report.summary());
    assert!(report.error.is_none(), "{}", report.summary());
    assert!(report.requests > 0, "{}", report.summary());
}

/// The server holds one request for 100 ms. Open loop at a fixed rate must show the stall in
/// its tail (every request scheduled during the stall waited, timed from its intended send
/// time); closed loop with one connection sees one slow request and nothing else.
#[test]
fn open_loop_shows_a_stall_that_closed_loop_hides() -> anyhow::Result<()> {
    let stall = Duration::from_millis(100);
    let mut results = Vec::new();
    for rate in [Some(1000.0), None] {
        let mut config = short(Protocol::Http, "");
        config.duration = Duration::from_secs(2);
        config.connections = 1;
        config.rate = rate;
        let stall_at = Instant::now() + config.warmup + Duration::from_millis(600);
        let port = spawn_stalling_server(stall_at, stall)?;
        config.target = format!("http://127.0.0.1:{port}/");
        let report = run(config, 1)?;
        completed(&report);
        eprintln!("{}", report.summary());
        results.push(report);
    }
    let (open, closed) = (&results[0], &results[1]);
    let stall_us = stall.as_micros() as f64;
    // Open loop: ~100 requests were due during the stall, waiting 100..0 ms: 5% of 2000.
    assert!(open.latency_us.max >= stall_us * 0.95, "{}", open.summary());
    assert!(open.latency_us.p99 >= stall_us * 0.3, "{}", open.summary());
    // Closed loop: the one stalled request is its max, and it is alone (< 0.1% of samples).
    assert!(
        closed.latency_us.max >= stall_us * 0.95,
        "{}",
        closed.summary()
    );
    assert!(closed.requests >= 2000, "{}", closed.summary());
    assert!(
        closed.latency_us.p999 < stall_us * 0.5,
        "{}",
        closed.summary()
    );
    Ok(())
}

/// Every answer the server gave is counted once: the report's requests are the server's
/// answers minus the first request (before the run) and those still in flight at the end.
#[test]
fn requests_are_counted_exactly() -> anyhow::Result<()> {
    let never = Instant::now() + Duration::from_secs(3600);
    let (port, answered) = support::spawn_counting_server(never, Duration::ZERO)?;
    let mut config = short(Protocol::Http, format!("http://127.0.0.1:{port}/"));
    config.warmup = Duration::ZERO;
    config.connections = 4;
    config.pipeline = 2;
    let r = run(config, 1)?;
    completed(&r);
    let served = answered.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        served > r.requests,
        "counted {} answers, the server gave {served}",
        r.requests
    );
    let uncounted = served - 1 - r.requests;
    assert!(
        uncounted <= 4 * 2,
        "served {served}, counted {}",
        r.requests
    );
    Ok(())
}

#[test]
fn http1_h2c_and_pipelining_answer_and_report_cpu() -> anyhow::Result<()> {
    let port = support::http::spawn(None)?;
    let url = format!("http://127.0.0.1:{port}/");
    let mut http = short(Protocol::Http, &url);
    http.pipeline = 4;
    let r = run(http, 1)?;
    completed(&r);
    assert_eq!(r.errors.total, 0, "{}", r.summary());
    assert!(
        r.client_cpu.user_s + r.client_cpu.sys_s > 0.0,
        "{}",
        r.summary()
    );
    assert!(r.latency_us.p50 <= r.latency_us.p99 && r.latency_us.p99 <= r.latency_us.max);
    let mut h2 = short(Protocol::H2, &url);
    h2.streams = 4;
    let r = run(h2, 1)?;
    completed(&r);
    assert_eq!(r.errors.total, 0, "{}", r.summary());
    Ok(())
}

#[test]
fn tls_with_the_right_ca_works_with_the_wrong_one_fails_clearly() -> anyhow::Result<()> {
    let (server, ca_pem) = support::http::tls_config()?;
    let port = support::http::spawn(Some(server))?;
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem)?;
    let url = format!("https://localhost:{port}/");
    for (protocol, new_conn, resumption) in [
        (Protocol::Http, false, true),
        (Protocol::H2, false, true),
        (Protocol::Http, true, true),
        (Protocol::Http, true, false),
    ] {
        let mut config = short(protocol, &url);
        config.tls.ca = Some(ca.clone());
        config.new_conn = new_conn;
        config.tls.resumption = resumption;
        let r = run(config, 1)?;
        completed(&r);
        assert_eq!(r.errors.total, 0, "{}", r.summary());
        let tls = r.tls_handshakes.clone().unwrap_or_default();
        if new_conn {
            // A handshake per request; resumed ones only when resumption is on.
            assert!(tls.full + tls.resumed >= r.requests, "{}", r.summary());
            assert_eq!(tls.resumed > 0, resumption, "{}", r.summary());
        } else {
            // Kept alive: the first request's connection and one per connection, which resume
            // the first one's session.
            let all = tls.full + tls.resumed;
            assert!(tls.full >= 1 && (3..10).contains(&all), "{}", r.summary());
        }
    }
    // A CA that did not sign the server's certificate.
    let (_, other_ca) = support::http::tls_config()?;
    let wrong = dir.path().join("wrong.pem");
    std::fs::write(&wrong, other_ca)?;
    let mut config = short(Protocol::H2, &url);
    config.tls.ca = Some(wrong.clone());
    let r = run(config, 1)?;
    assert!(!r.completed && r.requests == 0);
    let error = r.error.unwrap_or_default();
    assert!(
        error.contains("TLS handshake") && error.contains("invalid peer certificate"),
        "{error}"
    );
    // --insecure accepts it; --sni names a host the certificate does not cover.
    let mut config = short(Protocol::Http, &url);
    config.tls.insecure = true;
    completed(&run(config, 1)?);
    let mut config = short(Protocol::Http, &url);
    config.tls.ca = Some(ca.clone());
    config.tls.sni = Some("elsewhere.example".into());
    let error = run(config, 1)?.error.unwrap_or_default();
    assert!(error.contains("elsewhere.example"), "{error}");
    // A CA file that is not PEM is a setup error naming the flag.
    let mut config = short(Protocol::Http, &url);
    config.tls.ca = Some(dir.path().join("missing.pem"));
    let e = support_run_err(config);
    assert!(e.contains("--ca") && e.contains("missing.pem"), "{e}");
    Ok(())
}

fn support_run_err(config: Config) -> String {
    match run(config, 1) {
        Ok(r) => panic!("expected a setup error, got\n{}", r.summary()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn grpc_echo_answers_and_a_wrong_method_is_named() -> anyhow::Result<()> {
    let port = support::http::spawn(None)?;
    let r = run(short(Protocol::Grpc, format!("127.0.0.1:{port}")), 1)?;
    completed(&r);
    assert_eq!(r.errors.total, 0, "{}", r.summary());
    let mut wrong = short(Protocol::Grpc, format!("http://127.0.0.1:{port}"));
    wrong.grpc_method = "/skiff.echo.v1.Echo/Nope".into();
    let r = run(wrong, 1)?;
    assert!(!r.completed);
    let error = r.error.unwrap_or_default();
    assert!(
        error.contains("UNIMPLEMENTED") && error.contains("/skiff.echo.v1.Echo/Nope"),
        "{error}"
    );
    Ok(())
}

#[test]
fn tcp_udp_and_dns_answer() -> anyhow::Result<()> {
    let echo = spawn_tcp_echo()?;
    let mut tcp = short(Protocol::Tcp, format!("127.0.0.1:{echo}"));
    tcp.payload = bytes::Bytes::from_static(b"ping\n");
    let r = run(tcp, 1)?;
    completed(&r);
    assert_eq!(r.errors.total, 0, "{}", r.summary());
    // Connect-only: every request is a handshake.
    let r = run(short(Protocol::Tcp, format!("127.0.0.1:{echo}")), 1)?;
    completed(&r);
    let udp_port = spawn_udp(None)?;
    let mut udp = short(Protocol::Udp, format!("127.0.0.1:{udp_port}"));
    udp.payload = bytes::Bytes::from_static(b"ping");
    completed(&run(udp, 1)?);
    let dns_port = spawn_udp(Some(0))?;
    let mut dns = short(Protocol::Dns, format!("127.0.0.1:{dns_port}"));
    dns.qname = "example.com.".into();
    dns.qtype = "AAAA".into();
    let r = run(dns, 1)?;
    completed(&r);
    assert_eq!(r.errors.total, 0, "{}", r.summary());
    // Every answer NXDOMAIN: the first request already says so.
    let nx = spawn_udp(Some(3))?;
    let r = run(short(Protocol::Dns, format!("127.0.0.1:{nx}")), 1)?;
    let error = r.error.unwrap_or_default();
    assert!(
        error.contains("NXDOMAIN") && error.contains("kubernetes.default"),
        "{error}"
    );
    Ok(())
}

/// DNS over TCP: `--pipeline` queries written back to back on each connection, answered out of
/// order (the server reverses each batch), every connection reused for the whole run.
#[test]
fn dns_over_tcp_pipelines_on_reused_connections() -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let (port, seen) = support::spawn_dns_tcp(0, None)?;
    let mut dns = short(Protocol::Dns, format!("127.0.0.1:{port}"));
    dns.dns_tcp = true;
    dns.pipeline = 4;
    let r = run(dns, 1)?;
    completed(&r);
    assert_eq!(r.errors.total, 0, "{}", r.summary());
    assert_eq!(r.transport.as_deref(), Some("tcp"));
    assert!(r.summary().contains("dns over tcp"), "{}", r.summary());
    // The preflight's connection and the run's two, however many queries went over them.
    let connections = seen.connections.load(Ordering::Relaxed);
    let queries = seen.queries.load(Ordering::Relaxed);
    assert!(connections <= 3, "{connections} connections");
    assert!(
        queries as u64 >= r.requests && r.requests > 100,
        "{}",
        r.summary()
    );
    assert!(seen.max_batch.load(Ordering::Relaxed) >= 2, "{seen:?}");

    // Open loop over TCP: answers, nothing fails (whether the rate held depends on the machine).
    let (port, _) = support::spawn_dns_tcp(0, None)?;
    let mut open = short(Protocol::Dns, format!("127.0.0.1:{port}"));
    open.dns_tcp = true;
    open.pipeline = 4;
    open.rate = Some(500.0);
    let r = run(open, 1)?;
    completed(&r);
    assert_eq!(r.errors.total, 0, "{}", r.summary());
    assert_eq!(r.mode, "open", "{}", r.summary());

    // Error answers by kind: the first request says so.
    let (nx, _) = support::spawn_dns_tcp(3, None)?;
    let mut bad = short(Protocol::Dns, format!("127.0.0.1:{nx}"));
    bad.dns_tcp = true;
    let r = run(bad, 1)?;
    assert!(!r.completed, "{}", r.summary());
    let error = r.error.unwrap_or_default();
    assert!(
        error.contains("NXDOMAIN") && error.contains("kubernetes.default"),
        "{error}"
    );
    Ok(())
}

/// A server that closes each connection after 10 answers: the answers missing from the cut
/// batch are `io` errors (each counted), and the run goes on over new connections.
#[test]
fn dns_over_tcp_counts_a_closed_connection_and_reconnects() -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let (port, seen) = support::spawn_dns_tcp(0, Some(10))?;
    let mut dns = short(Protocol::Dns, format!("127.0.0.1:{port}"));
    dns.dns_tcp = true;
    dns.pipeline = 4;
    dns.connections = 1;
    let r = run(dns, 1)?;
    completed(&r);
    let io = r.errors.by_kind.get("io").copied().unwrap_or(0);
    // Batches of 4 against a limit of 10: the third batch loses 2 answers on every connection.
    assert!(io >= 2 && io % 2 == 0, "{}", r.summary());
    // Each connection answers 10: more answers than that means the run went on over new ones.
    assert!(r.requests > 10, "{}", r.summary());
    assert!(seen.connections.load(Ordering::Relaxed) >= 3, "{seen:?}");
    Ok(())
}

#[test]
fn unreachable_targets_fail_with_the_reason_and_an_empty_report() -> anyhow::Result<()> {
    let port = free_port()?;
    for protocol in [Protocol::Http, Protocol::H2, Protocol::Grpc, Protocol::Tcp] {
        let target = match protocol {
            Protocol::Tcp => format!("127.0.0.1:{port}"),
            _ => format!("http://127.0.0.1:{port}/"),
        };
        let r = run(short(protocol, target), 1)?;
        assert!(!r.completed && r.requests == 0, "{}", r.summary());
        let error = r.error.clone().unwrap_or_default();
        assert!(
            error.contains(&format!("cannot connect to 127.0.0.1:{port}"))
                && error.contains("refused"),
            "{error}"
        );
        // The partial report is still a whole JSON document.
        let json = serde_json::to_value(&r)?;
        assert_eq!(json["completed"], false);
        assert_eq!(json["latency_us"]["p99"], 0.0);
    }
    for protocol in [Protocol::Udp, Protocol::Dns] {
        let r = run(short(protocol, format!("127.0.0.1:{port}")), 1)?;
        let error = r.error.unwrap_or_default();
        assert!(error.contains("nothing listens"), "{error}");
    }
    let mut tcp = short(Protocol::Dns, format!("127.0.0.1:{port}"));
    tcp.dns_tcp = true;
    let r = run(tcp, 1)?;
    assert!(!r.completed && r.requests == 0, "{}", r.summary());
    let error = r.error.clone().unwrap_or_default();
    assert!(
        error.contains(&format!("cannot connect to 127.0.0.1:{port}")) && error.contains("refused"),
        "{error}"
    );
    assert_eq!(serde_json::to_value(&r)?["transport"], "tcp");
    let e = support_run_err(short(Protocol::Http, "ftp://127.0.0.1/"));
    assert!(e.contains("ftp"), "{e}");
    let e = support_run_err(short(Protocol::Tcp, "127.0.0.1"));
    assert!(e.contains("no port"), "{e}");
    let mut bad = short(Protocol::Dns, "127.0.0.1:53");
    bad.qtype = "NOPE".into();
    let e = support_run_err(bad);
    assert!(e.contains("--qtype"), "{e}");
    Ok(())
}

/// A rate no single connection can hold: the run completes and says by how much it fell short.
#[test]
fn a_rate_too_high_is_reported_with_the_numbers() -> anyhow::Result<()> {
    let (dns_port, _) = support::spawn_dns_tcp(0, None)?;
    let mut dns = short(Protocol::Dns, format!("127.0.0.1:{dns_port}"));
    dns.dns_tcp = true;
    dns.connections = 1;
    dns.rate = Some(10_000_000.0);
    let r = run(dns, 1)?;
    completed(&r);
    let warning = r.warnings.join("\n");
    assert!(
        warning.contains("achieved") && warning.contains("of 10000000 req/s"),
        "{}",
        r.summary()
    );

    let port = support::http::spawn(None)?;
    let mut config = short(Protocol::Http, format!("http://127.0.0.1:{port}/"));
    config.connections = 1;
    config.rate = Some(10_000_000.0);
    let r = run(config, 1)?;
    completed(&r);
    let warning = r.warnings.join("\n");
    assert!(
        warning.contains("achieved") && warning.contains("of 10000000 req/s"),
        "{}",
        r.summary()
    );
    Ok(())
}

#[test]
fn runs_plot_to_svg() -> anyhow::Result<()> {
    let port = support::http::spawn(None)?;
    let dir = tempfile::tempdir()?;
    let mut runs = Vec::new();
    for (label, connections) in [("one", 1), ("four", 4)] {
        let mut config = short(Protocol::Http, format!("http://127.0.0.1:{port}/"));
        config.connections = connections;
        let report = run(config, 1)?;
        let path = dir.path().join(format!("{label}.json"));
        report.write_json(&path)?;
        runs.push(PlotRun {
            label: label.into(),
            report: Report::read_json(&path).map_err(anyhow::Error::msg)?,
        });
    }
    let out = dir.path().join("plot.svg");
    skiff_loadgen::plot(&runs, &out)?;
    let svg = std::fs::read_to_string(&out)?;
    assert!(svg.starts_with("<svg") && svg.contains("one") && svg.contains("four"));
    assert!(
        svg.contains("99.9%"),
        "the x axis names the tail percentiles"
    );
    let empty = Report::read_json(&dir.path().join("missing.json"));
    assert!(empty.is_err_and(|e| e.contains("missing.json")));
    Ok(())
}
