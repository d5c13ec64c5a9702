//! `skiff bench`: flags to a `skiff_loadgen::Config`, the runtime, the progress line, the JSON
//! file and the exit status. The load generator itself is the `skiff-loadgen` crate.

use std::io::{IsTerminal as _, Write as _};

use anyhow::Context as _;
use skiff_loadgen::{Config, GrpcDescriptors, PlotRun, Protocol, Report, TlsOptions};

use crate::cli::{BenchArgs, BenchCommand, BenchPlot, BenchRun};

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (protocol, run) = match args.command {
        BenchCommand::Plot(plot) => return self::plot(&plot),
        BenchCommand::Http(r) => (Protocol::Http, r),
        BenchCommand::H2(r) => (Protocol::H2, r),
        BenchCommand::Grpc(r) => (Protocol::Grpc, r),
        BenchCommand::Tcp(r) => (Protocol::Tcp, r),
        BenchCommand::Udp(r) => (Protocol::Udp, r),
        BenchCommand::Dns(r) => (Protocol::Dns, r),
    };
    load(protocol, run)
}

fn config(protocol: Protocol, r: &BenchRun) -> Config {
    let mut c = Config::new(protocol, r.target.clone());
    c.duration = r.duration;
    c.warmup = r.warmup;
    c.connections = r.connections;
    c.streams = r.streams;
    c.pipeline = r.pipeline;
    c.rate = r.rate;
    c.timeout = r.timeout;
    c.new_conn = r.new_conn;
    c.tls = TlsOptions {
        insecure: r.insecure,
        ca: r.ca.clone(),
        sni: r.sni.clone(),
        resumption: !r.no_resumption,
    };
    c.method = r.http_method.clone();
    c.headers = r.headers.clone();
    c.payload = r.payload.clone().into_bytes().into();
    c.expect = r.expect;
    c.grpc_method = r.method.clone();
    c.grpc_descriptors = match (&r.proto_set, r.grpc_reflection) {
        (Some(path), _) => Some(GrpcDescriptors::ProtoSet(path.clone())),
        (None, true) => Some(GrpcDescriptors::Reflection),
        (None, false) => None,
    };
    c.qname = r.qname.clone();
    c.qtype = r.qtype.clone();
    c.dns_tcp = r.tcp;
    c
}

fn load(protocol: Protocol, r: BenchRun) -> anyhow::Result<()> {
    let threads = r
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let tty = std::io::stderr().is_terminal();
    let quiet = r.quiet;
    let progress = move |p: &skiff_loadgen::Progress| {
        if quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r{}\x1b[K", p.line())
        } else {
            writeln!(err, "{}", p.line())
        };
    };
    let interrupt = async {
        // No signal handler means no interrupt to wait for: run to the end.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let config = config(protocol, &r);
    let report = match runtime.block_on(skiff_loadgen::run(config.clone(), interrupt, progress)) {
        Ok(report) => report,
        Err(e) => {
            // Scripts read the JSON file whatever happened: it says why there are no numbers.
            if let Some(path) = &r.json {
                let _ = Report::failed(&config, e.to_string()).write_json(path);
            }
            return Err(e.into());
        }
    };
    if tty && !quiet {
        eprint!("\r\x1b[K");
    }
    if let Some(path) = &r.json {
        report
            .write_json(path)
            .with_context(|| format!("cannot write the results to {}", path.display()))?;
    }
    writeln!(std::io::stdout().lock(), "{}", report.summary())?;
    finish(&report, r.json.as_deref(), r.duration)
}

/// Exit status: success only when the run went the whole duration.
fn finish(
    report: &Report,
    json: Option<&std::path::Path>,
    planned: std::time::Duration,
) -> anyhow::Result<()> {
    let partial = match json {
        Some(path) => format!("; partial results in {}", path.display()),
        None => String::new(),
    };
    if let Some(error) = &report.error {
        anyhow::bail!("the benchmark did not run: {error}{partial}");
    }
    if report.interrupted {
        // The measured window against the one asked for (the warm-up is not in either).
        anyhow::bail!(
            "interrupted after {:.1}s of the {:.1}s to measure{partial}",
            report.duration_s,
            planned.as_secs_f64()
        );
    }
    Ok(())
}

fn plot(args: &BenchPlot) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.labels.is_empty() || args.labels.len() == args.inputs.len(),
        "{} --label for {} input(s): give one per input or none",
        args.labels.len(),
        args.inputs.len()
    );
    let mut runs = Vec::new();
    for (i, path) in args.inputs.iter().enumerate() {
        let report = Report::read_json(path).map_err(anyhow::Error::msg)?;
        let label = args.labels.get(i).cloned().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string())
        });
        runs.push(PlotRun { label, report });
    }
    skiff_loadgen::plot(&runs, &args.output)?;
    tracing::info!("wrote {}", args.output.display());
    Ok(())
}
