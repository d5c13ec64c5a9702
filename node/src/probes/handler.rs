//! One run of a probe's handler (httpGet, tcpSocket, exec, grpc) with its timeout.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{ExecResult, ProbeTarget, grpc, http};

/// A probe result: `Err` carries upstream's failure text (the part after `probe failed: `).
pub type Outcome = Result<(), String>;

/// Runs `probe`'s handler once against `target`; `timeout` bounds the whole attempt.
pub async fn run_handler(
    probe: &Probe,
    container: &Container,
    target: &dyn ProbeTarget,
    timeout: Duration,
) -> Outcome {
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        return match target.exec(&command, timeout).await {
            Ok(ExecResult::Exited { code: 0, .. }) => Ok(()),
            Ok(ExecResult::Exited { code, output }) if output.trim().is_empty() => Err(format!(
                "command {:?} exited with {code}",
                command.join(" ")
            )),
            Ok(ExecResult::Exited { output, .. }) => Err(output.trim_end().to_owned()),
            Ok(ExecResult::TimedOut) => Err(format!("command {:?} timed out", command.join(" "))),
            Err(e) => Err(format!("exec {:?}: {e}", command.join(" "))),
        };
    }
    let default_host = target.pod_ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    if let Some(get) = &probe.http_get {
        let port = resolve_port(&get.port, container)?;
        let host = get.host.clone().filter(|h| !h.is_empty());
        return http::probe(get, host, default_host, port, target, timeout).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = resolve_port(&tcp.port, container)?;
        let host = match tcp.host.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => parse_host(h)?,
            None => default_host,
        };
        let addr = fmt_addr(host, port);
        return match tokio::time::timeout(timeout, target.connect_tcp(host, port)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {addr}: connect: {}", io_text(&e))),
            Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
        };
    }
    if let Some(g) = &probe.grpc {
        let port = u16::try_from(g.port)
            .map_err(|_| format!("grpc port {} is out of range 1-65535", g.port))?;
        let service = g.service.clone().unwrap_or_default();
        return grpc::probe(target, default_host, port, &service, timeout).await;
    }
    Err("probe has no handler: set one of exec, httpGet, tcpSocket or grpc".to_owned())
}

/// A port by number, or by the name of one of the container's ports.
fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => match s.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| {
                    format!(
                        "couldn't find port {s:?} in container {:?}: name a port of the container's ports",
                        container.name
                    )
                })?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

/// Probe hosts must be IP addresses here: the kubelet has no resolver in the node netns.
pub(super) fn parse_host(host: &str) -> Result<IpAddr, String> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("host {host:?} is not an IP address; skiff probes need an IP host"))
}

pub(super) fn fmt_addr(host: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(host, port).to_string()
}

/// Lower-case text like Go's `connect: connection refused`.
pub(super) fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        _ => e.to_string(),
    }
}
