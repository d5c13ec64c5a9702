//! Shared by the integration tests: loopback servers (Debian's nginx, small tokio ones), CPU
//! pinning, and running the load generator in-process.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use skiff_loadgen::{Config, Report};

/// A port free on loopback a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn wait_listening(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Pin the calling thread (and the threads it starts from now on) to `cpu`.
pub fn pin_self(cpu: usize) -> anyhow::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).context("sched_setaffinity")
}

/// Debian's nginx, one process (no master), on loopback: `http` serves HTTP/1.1, `h2c`
/// prior-knowledge HTTP/2; both answer every request with 200 "hello\n". Killed on drop.
pub struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
    pub http: u16,
    pub h2c: u16,
}

impl Nginx {
    pub fn start(cpu: usize) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let (http, h2c) = (free_port()?, free_port()?);
        let d = dir.path().display();
        let conf = format!(
            "master_process off;\ndaemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
events {{ worker_connections 4096; }}\n\
http {{\n access_log off;\n keepalive_requests 100000000;\n\
 client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
 server {{ listen 127.0.0.1:{http}; location / {{ return 200 \"hello\\n\"; }} }}\n\
 server {{ listen 127.0.0.1:{h2c} http2; http2_max_requests 100000000; location / {{ return 200 \"hello\\n\"; }} }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("taskset")
            .args(["-c", &cpu.to_string(), "nginx", "-c"])
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start nginx (scripts/bootstrap installs it)")?;
        let nginx = Nginx {
            child,
            _dir: dir,
            http,
            h2c,
        };
        wait_listening(http)?;
        wait_listening(h2c)?;
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `config` in-process on a runtime of `threads` workers.
pub fn run(config: Config, threads: usize) -> anyhow::Result<Report> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let report = runtime.block_on(skiff_loadgen::run(
        config,
        std::future::pending::<()>(),
        |_| {},
    ))?;
    Ok(report)
}

/// CPU seconds of this process's waited-for children (`cutime + cstime` of /proc/self/stat).
pub fn children_cpu_s() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = text.rfind(')').map_or("", |i| &text[i + 1..]);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let get = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (get(13) + get(14)) / ticks
}

/// Run a peer tool to completion; its stdout, and the CPU seconds it used.
pub fn run_tool(program: &str, args: &[&str]) -> anyhow::Result<(String, f64)> {
    let before = children_cpu_s();
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program} (scripts/bootstrap installs it)"))?;
    let cpu = children_cpu_s() - before;
    anyhow::ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), cpu))
}

/// The number after `label` in `text`, e.g. "Requests/sec:" → 27226.7.
pub fn number_after(text: &str, label: &str) -> Option<f64> {
    let rest = &text[text.find(label)? + label.len()..];
    rest.split_whitespace().next()?.trim_end_matches(',').parse().ok()
}

pub fn exists(program: &str) -> bool {
    Path::new("/usr/bin").join(program).exists() || Path::new("/usr/sbin").join(program).exists()
}
