//! The `skiff` binary: command line, configuration and wiring of the components. Thin.

mod agent;
mod bench;
mod builtins;
mod cli;
mod controller;
mod manifests;
mod pod_netns;
mod server;
mod up;

use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use anyhow::Context as _;
use cli::{
    Cli, Command, FieldValidation, LogFormat, ProxyArgs, ProxyCommand, TokenArgs, TokenCommand,
    ValidateArgs,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A mutex's guard, poisoned or not: a panic while holding it must not take the data plane's
/// bookkeeping down with it.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Validate(args) => validate(&args),
        Command::Server(args) => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(server::run(args))
        }
        Command::Controller(args) => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(controller::run(args))
        }
        Command::Token(TokenArgs {
            command: TokenCommand::Create(t),
        }) => {
            let token = skiff_apiserver::server::create_token(&t.data_dir, &t.name, &t.groups)
                .with_context(|| format!("cannot create a token in {}", t.data_dir.display()))?;
            use std::io::Write as _;
            writeln!(std::io::stdout().lock(), "{token}")?;
            Ok(())
        }
        Command::Echo(args) => builtins::echo(&args),
        Command::GrpcEcho(args) => builtins::grpc_echo(&args),
        Command::Pause(_) => builtins::pause(),
        Command::Up(args) => up::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Proxy(ProxyArgs {
            command: ProxyCommand::Dump(d),
        }) => proxy_dump(d.admin_addr),
        Command::Agent(args) => agent::run(args),
    }
}

/// `skiff validate`: every object that passes is listed on stdout; every failure on stderr;
/// exit status 1 if any failed.
fn validate(args: &ValidateArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mode = match args.validate {
        FieldValidation::Strict => skiff_api::Strictness::Strict,
        FieldValidation::Warn => skiff_api::Strictness::Warn,
        FieldValidation::Ignore => skiff_api::Strictness::Ignore,
    };
    let config = skiff_api::ValidationConfig {
        node_port_range: args.service_node_port_range.clone(),
    };
    let mut stdout = std::io::stdout().lock();
    let (mut valid, mut failed) = (0usize, 0usize);
    let files = manifests::expand_with(&args.manifests, args.recursive)?;
    if files.is_empty() {
        anyhow::bail!(
            "no manifest files (.yaml, .yml, .json) in {}{}",
            args.manifests
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if args.recursive {
                ""
            } else {
                "; add -R to read the folders inside"
            }
        );
    }
    for file in files {
        let source = file.display().to_string();
        let checked = match manifests::read(&file) {
            Ok(text) => manifests::check(&source, &text, mode, &config),
            Err(e) => manifests::Checked {
                errors: vec![format!("{e:#}")],
                ..Default::default()
            },
        };
        for warning in &checked.warnings {
            tracing::warn!("{warning}");
        }
        for error in &checked.errors {
            tracing::error!("{error}");
        }
        failed += checked.errors.len();
        valid += checked.valid.len();
        for m in &checked.valid {
            let info = m.object.info();
            let name = match m.object.namespace() {
                Some(ns) => format!("{ns}/{}", m.object.name()),
                None => m.object.name().to_owned(),
            };
            if args.print {
                writeln!(
                    stdout,
                    "{}",
                    serde_json::to_string_pretty(&m.object.to_value()?)?
                )?;
            } else {
                writeln!(stdout, "valid {}/{name} ({source})", info.name)?;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} manifest error(s), {valid} object(s) valid");
    }
    tracing::info!("{valid} object(s) valid");
    Ok(())
}

/// `skiff proxy dump`: `GET /proxy/dump` from a running `skiff up`'s admin endpoint.
fn proxy_dump(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        .with_context(|| {
            format!(
                "cannot reach the admin endpoint {addr}: is `skiff up` running (its --admin-addr)?"
            )
        })?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(stream, "GET /proxy/dump HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("the admin endpoint sent no HTTP answer")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "the admin endpoint answered {}",
        head.lines().next().unwrap_or_default()
    );
    std::io::stdout().lock().write_all(body.as_bytes())?;
    Ok(())
}
