//! UDP request/response: one datagram out, one datagram back, on a connected socket per lane.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use tokio::net::UdpSocket;

use super::{Failure, Proto};
use crate::Error;
use crate::config::Config;
use crate::net::resolve;

#[derive(Debug)]
pub(crate) struct Udp {
    addr: SocketAddr,
    payload: bytes::Bytes,
}

#[derive(Debug)]
pub(crate) struct Lane {
    socket: UdpSocket,
    buf: Vec<u8>,
}

/// A socket connected to `addr`, so ICMP "port unreachable" comes back as an error.
pub(crate) async fn connected_socket(addr: SocketAddr) -> Result<UdpSocket, Failure> {
    let local: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let fail =
        |e: std::io::Error| Failure::new("connect", format!("UDP socket to {addr}: {e}"), true);
    let socket = UdpSocket::bind(local).await.map_err(fail)?;
    socket.connect(addr).await.map_err(fail)?;
    Ok(socket)
}

/// A datagram exchange failed: say so, and name the likely cause of a refusal.
pub(crate) fn udp_failure(addr: SocketAddr, e: &std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        Failure::new(
            "refused",
            format!("{addr} refused the datagram (ICMP port unreachable): nothing listens there"),
            true,
        )
    } else {
        Failure::new("io", format!("UDP with {addr}: {e}"), true)
    }
}

impl Udp {
    pub async fn new(config: &Config) -> Result<Udp, Error> {
        Ok(Udp {
            addr: resolve(&config.target, None).await?,
            payload: config.payload.clone(),
        })
    }
}

impl Proto for Udp {
    type Lane = Lane;

    async fn open(&self, lanes: usize) -> Result<Vec<Lane>, Failure> {
        let mut out = Vec::with_capacity(lanes);
        for _ in 0..lanes {
            out.push(Lane {
                socket: connected_socket(self.addr).await?,
                buf: vec![0; 65536],
            });
        }
        Ok(out)
    }

    async fn call(
        &self,
        lane: &mut Lane,
        _n: usize,
        done: &mut Vec<Instant>,
    ) -> Result<(), Failure> {
        lane.socket
            .send(&self.payload)
            .await
            .map_err(|e| udp_failure(self.addr, &e))?;
        lane.socket
            .recv(&mut lane.buf)
            .await
            .map_err(|e| udp_failure(self.addr, &e))?;
        done.push(Instant::now());
        Ok(())
    }
}
