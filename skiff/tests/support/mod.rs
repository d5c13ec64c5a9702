//! Shared by the `skiff bench` tests: the binary under test, a `skiff grpc-echo` process
//! on a free loopback port, and reading a results file.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};

pub const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

/// A `--json` results file, parsed.
pub fn json(path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `skiff grpc-echo` on a loopback port; killed on drop.
pub struct GrpcEcho {
    child: Child,
    pub port: u16,
}

impl GrpcEcho {
    pub fn start() -> anyhow::Result<GrpcEcho> {
        let port = free_port()?;
        let child = Command::new(SKIFF)
            .args([
                "grpc-echo",
                "--listen",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = GrpcEcho { child, port };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            ensure!(
                Instant::now() < deadline,
                "skiff grpc-echo did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }
}

impl Drop for GrpcEcho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
