//! DNS over UDP: one query (`--qname`, `--qtype`) built once, its ID changed per request, and
//! answers matched by ID; any RCODE but NOERROR is an error of that name. The query and the
//! RCODE check are shared with DNS over TCP (`dns_tcp`).

use std::net::SocketAddr;
use std::str::FromStr as _;
use std::time::Instant;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;

use super::udp::{connected_socket, udp_failure};
use super::{Failure, Proto};
use crate::Error;
use crate::config::Config;
use crate::net::resolve;

pub(crate) const HEADER_LEN: usize = 12;

/// The run's one question, encoded once; each request only rewrites the ID.
#[derive(Debug, Clone)]
pub(crate) struct Question {
    /// The query message (ID 0).
    pub query: Vec<u8>,
    /// `NAME TYPE`, for messages.
    pub text: String,
}

impl Question {
    pub fn new(config: &Config) -> Result<Question, Error> {
        let name = Name::from_ascii(&config.qname).map_err(|e| Error::Config {
            field: "--qname",
            problem: format!("{:?} is not a domain name: {e}", config.qname),
        })?;
        let qtype = RecordType::from_str(&config.qtype.to_ascii_uppercase()).map_err(|e| {
            Error::Config {
                field: "--qtype",
                problem: format!("{:?} is not a record type: {e}", config.qtype),
            }
        })?;
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(name, qtype));
        let query = message.to_vec().map_err(|e| Error::Config {
            field: "--qname",
            problem: format!("cannot encode the query: {e}"),
        })?;
        Ok(Question {
            query,
            text: format!("{} {qtype}", config.qname),
        })
    }

    /// `None` for NOERROR, else the failure naming the RCODE (`dns NXDOMAIN`). `answer` is a
    /// whole message of at least [`HEADER_LEN`] bytes.
    pub fn rcode_failure(&self, addr: SocketAddr, answer: &[u8]) -> Option<Failure> {
        let rcode = <ResponseCode as From<u16>>::from(u16::from(answer[3] & 0x0f));
        if rcode == ResponseCode::NoError {
            return None;
        }
        let name = format!("{rcode:?}").to_ascii_uppercase();
        Some(Failure::new(
            format!("dns {name}"),
            format!(
                "{addr} answered {name} ({}) for {}",
                rcode.to_str(),
                self.text
            ),
            false,
        ))
    }
}

#[derive(Debug)]
pub(crate) struct Dns {
    addr: SocketAddr,
    question: Question,
}

#[derive(Debug)]
pub(crate) struct Lane {
    socket: UdpSocket,
    query: Vec<u8>,
    id: u16,
    buf: Vec<u8>,
}

impl Dns {
    pub async fn new(config: &Config) -> Result<Dns, Error> {
        let addr = resolve(&config.target, Some(53)).await?;
        Ok(Dns {
            addr,
            question: Question::new(config)?,
        })
    }
}

impl Proto for Dns {
    type Lane = Lane;

    async fn open(&self, lanes: usize) -> Result<Vec<Lane>, Failure> {
        let mut out = Vec::with_capacity(lanes);
        for i in 0..lanes {
            out.push(Lane {
                socket: connected_socket(self.addr).await?,
                query: self.question.query.clone(),
                id: (i as u16).wrapping_mul(7919),
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
        let addr = self.addr;
        lane.id = lane.id.wrapping_add(1);
        let id = lane.id.to_be_bytes();
        lane.query[..2].copy_from_slice(&id);
        lane.socket
            .send(&lane.query)
            .await
            .map_err(|e| udp_failure(addr, &e))?;
        loop {
            let n = lane
                .socket
                .recv(&mut lane.buf)
                .await
                .map_err(|e| udp_failure(addr, &e))?;
            let answer = &lane.buf[..n];
            if n < HEADER_LEN {
                return Err(Failure::new(
                    "protocol",
                    format!("{addr} sent a {n}-byte datagram, not a DNS message"),
                    false,
                ));
            }
            // A late answer to an earlier (timed-out) query: not ours.
            if answer[..2] != id || answer[2] & 0x80 == 0 {
                continue;
            }
            if let Some(failure) = self.question.rcode_failure(addr, answer) {
                return Err(failure);
            }
            done.push(Instant::now());
            return Ok(());
        }
    }
}
