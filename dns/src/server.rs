//! UDP and TCP serving. Our own loops rather than hickory-server's `ServerFuture`: a cluster
//! answer is parsed, looked up and written synchronously into a reused buffer on the socket's
//! task (no per-query task, channel or `Message`), several UDP sockets share each address with
//! SO_REUSEPORT so the kernel spreads queries over cores, and only forwarded questions become
//! tasks (bounded, so a flood of them cannot grow memory without limit).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::DnsError;
use crate::answer::{Outcome, Question, answer};
use crate::forward::{self, Forwarder};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::wire::{self, Flags, Parsed, Rcode};

/// Forwarded questions in flight at once; beyond, SERVFAIL at once.
const MAX_SLOW_IN_FLIGHT: usize = 4096;
/// Open TCP connections at once; beyond, new ones are closed.
const MAX_TCP_CONNECTIONS: usize = 1024;
/// A TCP connection with no complete query for this long is closed (RFC 7766 §6.2.3).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// The largest DNS message (the TCP length prefix is 16 bits).
const MAX_TCP_MESSAGE: usize = 65535;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

/// Work that needs the network: forwarding, or chasing an ExternalName's CNAME upstream.
#[derive(Debug)]
pub(crate) enum SlowJob {
    Forward,
    Chase { ours: Vec<u8>, target: Vec<u8> },
}

#[derive(Debug)]
pub(crate) enum Step {
    /// `out` holds the answer.
    Reply {
        qtype: u16,
        rcode: Rcode,
    },
    Drop,
    Slow {
        qtype: u16,
        job: SlowJob,
    },
}

/// Everything a query needs: the zone, the current snapshot, the forwarder, the counters.
#[derive(Debug)]
pub struct Handler {
    pub(crate) zone: Box<[u8]>,
    pub(crate) snapshot: Arc<ArcSwapOption<Snapshot>>,
    pub(crate) forwarder: Arc<Forwarder>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Handler {
    /// The synchronous part, see [`respond_fast`].
    pub(crate) fn handle_fast(
        &self,
        packet: &[u8],
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Step {
        let snapshot = self.snapshot.load();
        respond_fast(&self.zone, snapshot.as_deref(), packet, transport, out)
    }

    /// The part that waits on upstreams. Always yields an answer for the client.
    pub(crate) async fn handle_slow(
        &self,
        packet: &[u8],
        job: SlowJob,
        transport: Transport,
    ) -> (Vec<u8>, Rcode) {
        let Ok(request) = Message::from_vec(packet) else {
            // Our parser took it, hickory's did not (odd records in the additional section).
            let mut out = Vec::new();
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            wire::error_response(&mut out, id, 0, packet[2] & 1 != 0, Rcode::FormErr);
            return (out, Rcode::FormErr);
        };
        let limit = match transport {
            Transport::Udp => Some(
                usize::from(request.max_payload())
                    .clamp(wire::MIN_UDP_PAYLOAD, usize::from(wire::MAX_UDP_PAYLOAD)),
            ),
            Transport::Tcp => Some(MAX_TCP_MESSAGE),
        };
        let limit = if request.edns.is_none() && transport == Transport::Udp {
            Some(wire::MIN_UDP_PAYLOAD)
        } else {
            limit
        };
        let result = match (job, request.queries.first()) {
            (SlowJob::Forward, Some(q)) => {
                let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
                match self
                    .forwarder
                    .resolve(q.name(), q.query_type(), q.query_class(), dnssec_ok)
                    .await
                {
                    Ok(r) => forward::client_response(&request, &r, &[], true, limit),
                    Err(e) => {
                        tracing::debug!(error = %e, name = %q.name(), "forwarding failed");
                        forward::servfail(&request)
                    }
                }
            }
            (SlowJob::Chase { ours, target }, Some(q)) => {
                self.chase(&request, q, &ours, &target, limit).await
            }
            (_, None) => forward::servfail(&request),
        };
        match result {
            Ok(bytes) => {
                let rcode = Message::from_vec(&bytes)
                    .ok()
                    .and_then(|m| Rcode::from_code(u16::from(m.metadata.response_code)))
                    .unwrap_or(Rcode::ServFail);
                (bytes, rcode)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode an answer");
                let mut out = Vec::new();
                wire::error_response(
                    &mut out,
                    request.metadata.id,
                    0,
                    request.metadata.recursion_desired,
                    Rcode::ServFail,
                );
                (out, Rcode::ServFail)
            }
        }
    }

    /// An ExternalName: our CNAME, then the upstream's records for the target. If the upstream
    /// cannot be reached, the CNAME alone (the client may resolve the target itself).
    async fn chase(
        &self,
        request: &Message,
        q: &hickory_proto::op::Query,
        ours: &[u8],
        target: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<u8>, forward::ForwardError> {
        let ours =
            Message::from_vec(ours).map_err(|e| forward::ForwardError::Encode(e.to_string()))?;
        let target = Name::from_labels(crate::names::labels(target))
            .map_err(|e| forward::ForwardError::Encode(e.to_string()))?;
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        match self
            .forwarder
            .resolve(&target, q.query_type(), DNSClass::IN, dnssec_ok)
            .await
        {
            Ok(r) => {
                let rcode = r.message.metadata.response_code;
                let keep = rcode == ResponseCode::NoError || rcode == ResponseCode::NXDomain;
                forward::client_response(request, &r, &ours.answers, keep, limit)
            }
            Err(e) => {
                tracing::debug!(error = %e, %target, "ExternalName target did not resolve upstream");
                forward::finish(ours, request, limit)
            }
        }
    }
}

/// Answers a packet from a snapshot (`None`: not synced) into `out`, or says what slow work
/// it needs. Synchronous and never panics, whatever the packet.
pub(crate) fn respond_fast(
    zone: &[u8],
    snapshot: Option<&Snapshot>,
    packet: &[u8],
    transport: Transport,
    out: &mut Vec<u8>,
) -> Step {
    let req = match wire::parse(packet) {
        Parsed::Query(req) => req,
        Parsed::Drop => return Step::Drop,
        Parsed::Error {
            id,
            opcode,
            recursion_desired,
            rcode,
        } => {
            wire::error_response(out, id, opcode, recursion_desired, rcode);
            return Step::Reply { qtype: 0, rcode };
        }
    };
    let limit = match transport {
        Transport::Udp => req.udp_limit(),
        Transport::Tcp => MAX_TCP_MESSAGE,
    };
    if req.edns.is_some_and(|e| e.version > 0) {
        let flags = Flags {
            authoritative: false,
            truncated: false,
            recursion_available: true,
            rcode: Rcode::BadVers,
        };
        wire::bare_response(out, &req, flags);
        return Step::Reply {
            qtype: req.qtype,
            rcode: Rcode::BadVers,
        };
    }
    let q = Question {
        name: req.qname.as_wire(),
        qtype: req.qtype,
        qclass: req.qclass,
    };
    match answer(zone, snapshot, &q) {
        Outcome::Answer(a) => {
            a.write(&req, out, Some(limit));
            Step::Reply {
                qtype: req.qtype,
                rcode: a.rcode,
            }
        }
        Outcome::Forward => Step::Slow {
            qtype: req.qtype,
            job: SlowJob::Forward,
        },
        Outcome::Chase { answer, target } => {
            let mut ours = Vec::new();
            answer.write(&req, &mut ours, None);
            Step::Slow {
                qtype: req.qtype,
                job: SlowJob::Chase {
                    ours,
                    target: target.to_vec(),
                },
            }
        }
    }
}

/// Sockets bound for the listen addresses.
#[derive(Debug)]
pub(crate) struct Bound {
    pub udp: Vec<Arc<UdpSocket>>,
    pub tcp: Vec<TcpListener>,
    /// One per listen address, with the port chosen when it asked for 0 (UDP and TCP share it).
    pub addrs: Vec<SocketAddr>,
}

/// Binds `per_addr` UDP sockets (SO_REUSEPORT) and one TCP listener on each address; with
/// port 0, one free port that both protocols have.
pub(crate) fn bind(listen: &[SocketAddr], per_addr: usize) -> Result<Bound, DnsError> {
    let mut bound = Bound {
        udp: Vec::new(),
        tcp: Vec::new(),
        addrs: Vec::new(),
    };
    for &addr in listen {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match bind_one(addr, per_addr.max(1)) {
                Ok((udp, tcp, local)) => {
                    bound.udp.extend(udp);
                    bound.tcp.push(tcp);
                    bound.addrs.push(local);
                    break;
                }
                // Port 0: the UDP port we got may be taken for TCP; try another.
                Err(_) if addr.port() == 0 && attempt < 20 => continue,
                Err(e) => return Err(DnsError::Bind(addr, e)),
            }
        }
    }
    Ok(bound)
}

type BoundOne = (Vec<Arc<UdpSocket>>, TcpListener, SocketAddr);

fn bind_one(addr: SocketAddr, per_addr: usize) -> std::io::Result<BoundOne> {
    let first = udp_socket(addr)?;
    let local = first.local_addr()?;
    let tcp = {
        let s = Socket::new(
            Domain::for_address(local),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        s.set_reuse_address(true)?;
        if local.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.bind(&local.into())?;
        s.listen(1024)?;
        s.set_nonblocking(true)?;
        TcpListener::from_std(s.into())?
    };
    let mut udp = vec![Arc::new(first)];
    for _ in 1..per_addr {
        udp.push(Arc::new(udp_socket(local)?));
    }
    Ok((udp, tcp, local))
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Bursts queue in the kernel rather than being dropped (capped by net.core.rmem_max).
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Serves on the bound sockets until the returned set is dropped or aborted.
pub(crate) fn spawn(bound: Bound, handler: Arc<Handler>) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let slow = Arc::new(Semaphore::new(MAX_SLOW_IN_FLIGHT));
    for sock in bound.udp {
        tasks.spawn(udp_loop(sock, handler.clone(), slow.clone()));
    }
    let conns = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    for listener in bound.tcp {
        tasks.spawn(tcp_accept(listener, handler.clone(), conns.clone()));
    }
    tasks
}

async fn udp_loop(sock: Arc<UdpSocket>, handler: Arc<Handler>, slow: Arc<Semaphore>) {
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(2048);
    loop {
        // Errors here are per datagram (e.g. ICMP reports of an earlier send): keep serving.
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let start = Instant::now();
        let packet = &buf[..n];
        match handler.handle_fast(packet, Transport::Udp, &mut out) {
            Step::Reply { qtype, rcode } => {
                let _ = sock.send_to(&out, peer).await;
                handler.metrics.query(qtype, Some(rcode), start.elapsed());
            }
            Step::Drop => handler.metrics.query(0, None, start.elapsed()),
            Step::Slow { qtype, job } => match slow.clone().try_acquire_owned() {
                Ok(permit) => {
                    let (sock, handler, packet) = (sock.clone(), handler.clone(), packet.to_vec());
                    tokio::spawn(async move {
                        let (bytes, rcode) =
                            handler.handle_slow(&packet, job, Transport::Udp).await;
                        let _ = sock.send_to(&bytes, peer).await;
                        handler.metrics.query(qtype, Some(rcode), start.elapsed());
                        drop(permit);
                    });
                }
                Err(_) => {
                    if let Parsed::Query(req) = wire::parse(packet) {
                        let flags = Flags {
                            authoritative: false,
                            truncated: false,
                            recursion_available: true,
                            rcode: Rcode::ServFail,
                        };
                        wire::bare_response(&mut out, &req, flags);
                        let _ = sock.send_to(&out, peer).await;
                    }
                    handler
                        .metrics
                        .query(qtype, Some(Rcode::ServFail), start.elapsed());
                }
            },
        }
    }
}

async fn tcp_accept(listener: TcpListener, handler: Arc<Handler>, conns: Arc<Semaphore>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            tcp_connection(stream, &handler).await;
            drop(permit);
        });
    }
}

/// Queries on one connection, answered in order (RFC 7766 allows pipelining; a client that
/// wants parallel answers opens more connections).
async fn tcp_connection(mut stream: TcpStream, handler: &Handler) {
    let _ = stream.set_nodelay(true);
    let mut packet = Vec::new();
    let mut out = Vec::with_capacity(4096);
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return;
        };
        packet.resize(usize::from(len), 0);
        let Ok(Ok(_)) = tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet)).await else {
            return;
        };
        let start = Instant::now();
        let (qtype, rcode) = match handler.handle_fast(&packet, Transport::Tcp, &mut out) {
            Step::Reply { qtype, rcode } => (qtype, rcode),
            Step::Drop => {
                handler.metrics.query(0, None, start.elapsed());
                return;
            }
            Step::Slow { qtype, job } => {
                let (bytes, rcode) = handler.handle_slow(&packet, job, Transport::Tcp).await;
                out = bytes;
                (qtype, rcode)
            }
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
        handler.metrics.query(qtype, Some(rcode), start.elapsed());
    }
}
