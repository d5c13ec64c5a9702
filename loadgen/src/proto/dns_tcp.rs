//! DNS over TCP (RFC 7766): every message behind its two-byte length, one connection reused for
//! query after query, up to `--pipeline` queries written back to back before their answers are
//! read, and answers matched by ID in whatever order the server sends them (RFC 7766 §6.2.1.1
//! lets it reorder).

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::dns::{HEADER_LEN, Question};
use super::{Failure, Proto};
use crate::Error;
use crate::config::Config;
use crate::net::resolve;

/// Read buffer to start with: a few typical answers. It grows to whatever one message needs.
const READ_BUF: usize = 16 * 1024;

#[derive(Debug)]
pub(crate) struct DnsTcp {
    addr: SocketAddr,
    question: Question,
    new_conn: bool,
}

#[derive(Debug)]
pub(crate) struct Lane {
    stream: Option<TcpStream>,
    id: u16,
    /// The batch being written: length-prefixed queries.
    out: Vec<u8>,
    /// IDs written and not yet answered.
    in_flight: Vec<u16>,
    /// Bytes read and not yet parsed are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl DnsTcp {
    pub async fn new(config: &Config) -> Result<DnsTcp, Error> {
        Ok(DnsTcp {
            addr: resolve(&config.target, Some(53)).await?,
            question: Question::new(config)?,
            new_conn: config.new_conn,
        })
    }

    async fn connect(&self) -> Result<TcpStream, Failure> {
        super::tcp::connect(self.addr, self.new_conn).await
    }

    /// Write the batch in `lane.out`, then read until every query in it is answered. Error
    /// answers (NXDOMAIN ...) are read to the end of the batch, so the connection stays in step,
    /// and come back as one failure counting them all.
    async fn exchange(&self, lane: &mut Lane, done: &mut Vec<Instant>) -> Result<(), Failure> {
        let addr = self.addr;
        let sent = lane.in_flight.len();
        let Some(stream) = lane.stream.as_mut() else {
            return Err(Failure::new("io", "no connection".into(), true));
        };
        let broken = |e: &std::io::Error, missing: usize| Failure {
            count: missing as u32,
            ..Failure::io(addr, e)
        };
        stream
            .write_all(&lane.out)
            .await
            .map_err(|e| broken(&e, sent))?;
        let mut refused: Option<Failure> = None;
        while !lane.in_flight.is_empty() {
            let have = &lane.buf[lane.start..lane.end];
            let len = if have.len() >= 2 {
                usize::from(u16::from_be_bytes([have[0], have[1]]))
            } else {
                usize::MAX
            };
            if len != usize::MAX && have.len() >= 2 + len {
                let answer = &have[2..2 + len];
                lane.start += 2 + len;
                let missing = lane.in_flight.len() as u32;
                let protocol = |message: String| Failure {
                    count: missing,
                    ..Failure::new("protocol", message, true)
                };
                if len < HEADER_LEN || answer[2] & 0x80 == 0 {
                    return Err(protocol(format!(
                        "{addr} sent a {len}-byte message that is not a DNS answer"
                    )));
                }
                let id = u16::from_be_bytes([answer[0], answer[1]]);
                let Some(at) = lane.in_flight.iter().position(|&q| q == id) else {
                    return Err(protocol(format!(
                        "{addr} answered ID {id}, which no query in flight on this connection has"
                    )));
                };
                lane.in_flight.swap_remove(at);
                match self.question.rcode_failure(addr, answer) {
                    None => done.push(Instant::now()),
                    Some(f) => match refused.as_mut() {
                        Some(first) => first.count += 1,
                        None => refused = Some(f),
                    },
                }
                continue;
            }
            // Not a whole message yet: make room after what is there, then read more.
            if lane.start > 0 {
                lane.buf.copy_within(lane.start..lane.end, 0);
                lane.end -= lane.start;
                lane.start = 0;
            }
            let need = if len == usize::MAX { 2 } else { 2 + len };
            if lane.buf.len() < need.max(lane.end + 1) {
                lane.buf.resize(need.max(lane.buf.len() * 2), 0);
            }
            let missing = lane.in_flight.len();
            if sent > 1 {
                // More answers are due and this client has nothing to send: ACK each segment at
                // once. A server that answers a batch one write at a time with Nagle on (Knot
                // does) holds every answer after the first until it is ACKed, and delayed ACK
                // would hold that ACK for up to 40 ms — a client artefact, not the server's
                // latency. Linux resets quick-ACK mode on its own, hence before every read.
                let _ = socket2::SockRef::from(&*stream).set_tcp_quickack(true);
            }
            match stream.read(&mut lane.buf[lane.end..]).await {
                Ok(0) => {
                    return Err(Failure {
                        count: missing as u32,
                        ..Failure::new(
                            "io",
                            format!(
                                "{addr} closed the connection with {missing} of {sent} answers missing"
                            ),
                            true,
                        )
                    });
                }
                Ok(n) => lane.end += n,
                Err(e) => return Err(broken(&e, missing)),
            }
        }
        refused.map_or(Ok(()), Err)
    }
}

impl Proto for DnsTcp {
    type Lane = Lane;

    async fn open(&self, lanes: usize) -> Result<Vec<Lane>, Failure> {
        let mut out = Vec::with_capacity(lanes);
        for i in 0..lanes {
            let stream = if self.new_conn {
                None
            } else {
                Some(self.connect().await?)
            };
            out.push(Lane {
                stream,
                id: (i as u16).wrapping_mul(7919),
                out: Vec::new(),
                in_flight: Vec::new(),
                buf: vec![0; READ_BUF],
                start: 0,
                end: 0,
            });
        }
        Ok(out)
    }

    async fn call(
        &self,
        lane: &mut Lane,
        n: usize,
        done: &mut Vec<Instant>,
    ) -> Result<(), Failure> {
        if lane.stream.is_none() {
            lane.stream = Some(self.connect().await?);
            (lane.start, lane.end) = (0, 0);
        }
        let query = &self.question.query;
        let len = u16::try_from(query.len())
            .map_err(|_| Failure::new("protocol", "the query is over 64 KiB".into(), false))?;
        lane.out.clear();
        lane.in_flight.clear();
        for _ in 0..n.max(1) {
            lane.id = lane.id.wrapping_add(1);
            lane.out.extend_from_slice(&len.to_be_bytes());
            lane.out.extend_from_slice(&lane.id.to_be_bytes());
            lane.out.extend_from_slice(&query[2..]);
            lane.in_flight.push(lane.id);
        }
        let result = self.exchange(lane, done).await;
        if self.new_conn || result.as_ref().is_err_and(|f| f.reconnect) {
            lane.stream = None;
        }
        result
    }
}
