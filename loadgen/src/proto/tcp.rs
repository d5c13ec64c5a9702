//! Raw TCP: connect-only (a request is a handshake) or request/response with `--payload`,
//! waiting for `--expect` bytes (the payload's length by default: an echo server).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{Failure, Proto};
use crate::Error;
use crate::config::Config;
use crate::net::resolve;

#[derive(Debug)]
pub(crate) struct Tcp {
    addr: std::net::SocketAddr,
    payload: bytes::Bytes,
    expect: usize,
    new_conn: bool,
}

#[derive(Debug)]
pub(crate) struct Lane {
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Tcp {
    pub async fn new(config: &Config) -> Result<Tcp, Error> {
        let addr = resolve(&config.target, None).await?;
        let expect = config.expect.unwrap_or(config.payload.len());
        if config.payload.is_empty() && expect > 0 {
            return Err(Error::Config {
                field: "--expect",
                problem: "a connect-only run (no --payload) reads no answer".into(),
            });
        }
        Ok(Tcp {
            addr,
            payload: config.payload.clone(),
            expect,
            // Without a payload a request *is* a connection.
            new_conn: config.new_conn || config.payload.is_empty(),
        })
    }

    async fn connect(&self) -> Result<TcpStream, Failure> {
        connect(self.addr, self.new_conn).await
    }
}

/// A TCP connection to `addr` with Nagle off; one used for a single request (`new_conn`) is
/// closed with RST: tens of thousands of handshakes a second would otherwise leave as many
/// sockets in TIME_WAIT and run out of ports. Shared with `dns --tcp`.
pub(crate) async fn connect(
    addr: std::net::SocketAddr,
    new_conn: bool,
) -> Result<TcpStream, Failure> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| Failure::new("connect", format!("cannot connect to {addr}: {e}"), true))?;
    let _ = stream.set_nodelay(true);
    if new_conn {
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    }
    Ok(stream)
}

impl Proto for Tcp {
    type Lane = Lane;

    async fn open(&self, lanes: usize) -> Result<Vec<Lane>, Failure> {
        let mut out = Vec::with_capacity(lanes);
        for _ in 0..lanes {
            let stream = if self.new_conn {
                None
            } else {
                Some(self.connect().await?)
            };
            out.push(Lane {
                stream,
                buf: vec![0; self.expect.clamp(1, 64 * 1024)],
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
        let addr = self.addr;
        if lane.stream.is_none() {
            lane.stream = Some(self.connect().await?);
        }
        let Some(stream) = lane.stream.as_mut() else {
            return Err(Failure::new("io", "no connection".into(), true));
        };
        if !self.payload.is_empty() {
            let exchanged = async {
                stream.write_all(&self.payload).await?;
                let mut left = self.expect;
                while left > 0 {
                    let want = left.min(lane.buf.len());
                    let n = stream.read(&mut lane.buf[..want]).await?;
                    if n == 0 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("closed with {left} of {} answer bytes missing", self.expect),
                        ));
                    }
                    left -= n;
                }
                Ok(())
            };
            if let Err(e) = exchanged.await {
                lane.stream = None;
                return Err(Failure::io(addr, &e));
            }
        }
        done.push(Instant::now());
        if self.new_conn {
            lane.stream = None;
        }
        Ok(())
    }
}
