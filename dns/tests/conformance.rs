//! The real server on 127.0.0.1 (a free port), records from Service and EndpointSlice objects,
//! queried by real clients: hickory's client over UDP and TCP, and `dig`. Forwarding goes to a
//! test upstream started here on loopback, never to the network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_net::proto::rr::rdata::{A, SOA, TXT};
use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use skiff_dns::fixtures;
use skiff_dns::{DnsConfig, DnsServer, Installer, Metrics, Model};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

struct Fixture {
    addr: SocketAddr,
    installer: Installer,
    metrics: Arc<Metrics>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn model() -> Model {
    let (s, e, p) = fixtures::cluster();
    Model::from_objects(&s, &e, &p)
}

/// A server on a free loopback port; `install`: with the fixture cluster already synced.
async fn start(upstreams: Vec<SocketAddr>, install: bool) -> Result<Fixture> {
    let mut config = DnsConfig {
        listen: vec!["127.0.0.1:0".parse()?],
        udp_sockets: 2,
        ..DnsConfig::default()
    };
    config.forward.upstreams = upstreams;
    config.forward.timeout = Duration::from_millis(500);
    let server = DnsServer::bind(config).await?;
    let addr = server.local_addrs()[0];
    assert_ne!(addr.port(), 0);
    if install {
        server.install(&model());
    }
    let (installer, metrics) = (server.installer(), server.metrics());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    Ok(Fixture {
        addr,
        installer,
        metrics,
        _stop: stop,
    })
}

async fn udp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let conn = UdpClientStream::builder(addr, TokioRuntimeProvider::default()).build();
    let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
    tokio::spawn(bg);
    client
}

async fn tcp_client(addr: SocketAddr) -> Result<Client<TokioRuntimeProvider>> {
    let (stream, sender) = TcpClientStream::new(addr, None, None, TokioRuntimeProvider::new());
    let (client, bg) = Client::<TokioRuntimeProvider>::new(stream.await?, sender);
    tokio::spawn(bg);
    Ok(client)
}

async fn query(
    client: &mut Client<TokioRuntimeProvider>,
    name: &str,
    rtype: RecordType,
) -> Result<Message> {
    let r = client
        .query(Name::from_ascii(name)?, DNSClass::IN, rtype)
        .await?;
    Ok(r.into_message())
}

fn rdatas(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .map(|r| format!("{} {}", r.record_type(), r.data))
        .collect();
    v.sort();
    v
}

/// Raw query over UDP with an optional EDNS payload size.
async fn raw_udp(
    addr: SocketAddr,
    name: &str,
    rtype: RecordType,
    edns: Option<u16>,
) -> Result<Message> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name)?, rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.send_to(&m.to_vec()?, addr).await?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf)).await??;
    Ok(Message::from_vec(&buf[..n])?)
}

/// The records every spec section promises, over one client.
async fn battery(client: &mut Client<TokioRuntimeProvider>) -> Result<()> {
    let cases: &[(&str, RecordType, &[&str])] = &[
        (
            "dns-version.cluster.local.",
            RecordType::TXT,
            &["TXT 1.1.0"],
        ),
        (
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
            &["A 10.96.0.1"],
        ),
        (
            "Kubernetes.DEFAULT.svc.cluster.local.",
            RecordType::A,
            &["A 10.96.0.1"],
        ),
        (
            "dual.default.svc.cluster.local.",
            RecordType::AAAA,
            &["AAAA fd00:10:96::20"],
        ),
        (
            "_https._tcp.kubernetes.default.svc.cluster.local.",
            RecordType::SRV,
            &["SRV 0 100 443 kubernetes.default.svc.cluster.local."],
        ),
        (
            "1.0.96.10.in-addr.arpa.",
            RecordType::PTR,
            &["PTR kubernetes.default.svc.cluster.local."],
        ),
        (
            "web.default.svc.cluster.local.",
            RecordType::A,
            &["A 10.244.0.5", "A 10.244.0.6"],
        ),
        (
            "web-0.web.default.svc.cluster.local.",
            RecordType::AAAA,
            &["AAAA fd00:10:244::5"],
        ),
        (
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
            &[
                "SRV 0 50 8080 10-244-0-6.web.default.svc.cluster.local.",
                "SRV 0 50 8080 web-0.web.default.svc.cluster.local.",
            ],
        ),
        (
            "6.0.244.10.in-addr.arpa.",
            RecordType::PTR,
            &["PTR 10-244-0-6.web.default.svc.cluster.local."],
        ),
        (
            "10-244-0-99.default.pod.cluster.local.",
            RecordType::A,
            &["A 10.244.0.99"],
        ),
    ];
    for &(name, rtype, want) in cases {
        let m = query(client, name, rtype)
            .await
            .with_context(|| format!("{name} {rtype}"))?;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.metadata.authoritative, "{name}: AA");
        assert_eq!(rdatas(&m), want, "{name} {rtype}");
    }
    for (name, rcode) in [
        ("nope.default.svc.cluster.local.", ResponseCode::NXDomain),
        ("empty.default.svc.cluster.local.", ResponseCode::NXDomain),
        ("default.svc.cluster.local.", ResponseCode::NoError),
        ("svc.cluster.local.", ResponseCode::NoError),
    ] {
        let m = query(client, name, RecordType::A)
            .await
            .with_context(|| name.to_string())?;
        assert_eq!(m.metadata.response_code, rcode, "{name}");
        assert!(m.answers.is_empty(), "{name}");
        let soa = m
            .authorities
            .first()
            .with_context(|| format!("{name}: no SOA"))?;
        assert!(matches!(soa.data, RData::SOA(_)), "{name}");
        assert_eq!(soa.ttl, 5, "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn spec_records_over_udp_and_tcp() -> Result<()> {
    let f = start(vec![], true).await?;
    battery(&mut udp_client(f.addr).await)
        .await
        .context("UDP")?;
    battery(&mut tcp_client(f.addr).await?)
        .await
        .context("TCP")?;
    assert!(
        f.metrics
            .render()
            .contains("skiff_dns_queries_total{type=\"A\",rcode=\"NOERROR\"}")
    );
    Ok(())
}

#[tokio::test]
async fn servfail_in_the_zone_until_the_first_sync() -> Result<()> {
    let f = start(vec![], false).await?;
    let m = raw_udp(
        f.addr,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
        None,
    )
    .await?;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    f.installer.install(&model());
    let m = raw_udp(
        f.addr,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
        None,
    )
    .await?;
    assert_eq!(rdatas(&m), ["A 10.96.0.1"]);
    Ok(())
}

#[tokio::test]
async fn a_new_snapshot_changes_answers_under_a_live_server() -> Result<()> {
    let f = start(vec![], true).await?;
    let m = raw_udp(
        f.addr,
        "late.default.svc.cluster.local.",
        RecordType::A,
        None,
    )
    .await?;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let mut model = model();
    let late = fixtures::service("default", "late", &["10.96.5.5"], &[]);
    let info = skiff_dns::model::ServiceInfo::from_service(&late).context("service")?;
    model.services.insert(info.key.clone(), info);
    f.installer.install(&model);
    let m = raw_udp(
        f.addr,
        "late.default.svc.cluster.local.",
        RecordType::A,
        None,
    )
    .await?;
    assert_eq!(rdatas(&m), ["A 10.96.5.5"]);
    Ok(())
}

/// A tiny upstream on loopback (UDP and TCP, one port): `www.example.com A`, an NXDOMAIN with
/// SOA, and `big.example.com TXT` too large for UDP. Counts the questions it gets.
struct Upstream {
    addr: SocketAddr,
    questions: Arc<AtomicUsize>,
}

fn upstream_answer(req: &Message) -> Message {
    let mut m = Message::response(req.metadata.id, OpCode::Query);
    m.metadata.message_type = MessageType::Response;
    m.metadata.recursion_available = true;
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.queries = req.queries.clone();
    let Some(q) = req.queries.first() else {
        return m;
    };
    let name = q.name().to_lowercase().to_ascii();
    match (name.as_str(), q.query_type()) {
        ("www.example.com.", RecordType::A) => {
            m.add_answer(Record::from_rdata(
                q.name().clone(),
                60,
                RData::A(A::new(192, 0, 2, 53)),
            ));
        }
        ("big.example.com.", RecordType::TXT) => {
            for i in 0..40 {
                let text = format!("{i:02}-{}", "x".repeat(60));
                m.add_answer(Record::from_rdata(
                    q.name().clone(),
                    60,
                    RData::TXT(TXT::new(vec![text])),
                ));
            }
        }
        _ => {
            m.metadata.response_code = ResponseCode::NXDomain;
            let zone = Name::from_ascii("example.com.").unwrap_or_default();
            let soa = SOA::new(zone.clone(), zone.clone(), 1, 3600, 600, 86400, 30);
            m.add_authority(Record::from_rdata(zone, 60, RData::SOA(soa)));
        }
    }
    m
}

async fn start_upstream() -> Result<Upstream> {
    let udp = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = udp.local_addr()?;
    let tcp = TcpListener::bind(addr).await?;
    let questions = Arc::new(AtomicUsize::new(0));
    let counted = questions.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            let Ok(req) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let mut resp = upstream_answer(&req);
            let Ok(mut bytes) = resp.to_vec() else {
                continue;
            };
            if bytes.len() > 512 {
                resp = resp.truncate();
                let Ok(b) = resp.to_vec() else { continue };
                bytes = b;
            }
            let _ = udp.send_to(&bytes, peer).await;
        }
    });
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            tokio::spawn(async move {
                let Ok(len) = stream.read_u16().await else {
                    return;
                };
                let mut buf = vec![0u8; usize::from(len)];
                if stream.read_exact(&mut buf).await.is_err() {
                    return;
                }
                let Ok(req) = Message::from_vec(&buf) else {
                    return;
                };
                let Ok(bytes) = upstream_answer(&req).to_vec() else {
                    return;
                };
                let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
                framed.extend(bytes);
                let _ = stream.write_all(&framed).await;
            });
        }
    });
    Ok(Upstream { addr, questions })
}

#[tokio::test]
async fn forwarding_with_cache_and_external_name_chase() -> Result<()> {
    let up = start_upstream().await?;
    let f = start(vec![up.addr], true).await?;
    let mut client = udp_client(f.addr).await;

    let m = query(&mut client, "www.example.com.", RecordType::A).await?;
    assert_eq!(rdatas(&m), ["A 192.0.2.53"]);
    assert!(m.metadata.recursion_available);
    assert!(!m.metadata.authoritative);
    let asked = up.questions.load(Ordering::SeqCst);
    let m = query(&mut client, "WWW.example.com.", RecordType::A).await?;
    assert_eq!(rdatas(&m), ["A 192.0.2.53"]);
    assert!(m.answers[0].ttl <= 60);
    assert_eq!(
        up.questions.load(Ordering::SeqCst),
        asked,
        "second answer from the cache"
    );

    // Negative answers are cached too (SOA minimum 30).
    let m = query(&mut client, "nx.example.com.", RecordType::A).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let asked = up.questions.load(Ordering::SeqCst);
    let m = query(&mut client, "nx.example.com.", RecordType::A).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        up.questions.load(Ordering::SeqCst),
        asked,
        "negative answer from the cache"
    );

    // An ExternalName: our CNAME, then the upstream's address for its target.
    let m = query(&mut client, "ext.default.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(rdatas(&m), ["A 192.0.2.53", "CNAME www.example.com."]);
    assert_eq!(m.answers[0].record_type(), RecordType::CNAME, "CNAME first");

    // Reverse names we hold no PTR for go upstream (NXDOMAIN from there, not from us).
    let m = query(&mut client, "9.9.9.9.in-addr.arpa.", RecordType::PTR).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(!m.metadata.authoritative);

    assert!(f.metrics.cache_hits.get() >= 2);
    Ok(())
}

#[tokio::test]
async fn truncated_over_udp_whole_over_tcp() -> Result<()> {
    let up = start_upstream().await?;
    let f = start(vec![up.addr], true).await?;
    let eps: Vec<String> = (0..100).map(|i| format!("10.244.1.{i}")).collect();
    let endpoints: Vec<fixtures::Ep<'_>> = eps.iter().map(|a| (a.as_str(), None, true)).collect();
    let mut model = model();
    let extra = Model::from_objects(
        &[fixtures::headless("default", "big", &[])],
        &[fixtures::slice("default", "big-1", "big", &endpoints, &[])],
        [],
    );
    model.services.extend(extra.services);
    model.slices.extend(extra.slices);
    f.installer.install(&model);

    let m = raw_udp(
        f.addr,
        "big.default.svc.cluster.local.",
        RecordType::A,
        Some(1232),
    )
    .await?;
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
    let m = query(
        &mut tcp_client(f.addr).await?,
        "big.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);

    // Forwarded: the upstream truncates over UDP, the forwarder retries over TCP; we then
    // truncate for a small UDP client and send it whole over TCP.
    let m = raw_udp(f.addr, "big.example.com.", RecordType::TXT, None).await?;
    assert!(m.metadata.truncation);
    let m = query(
        &mut tcp_client(f.addr).await?,
        "big.example.com.",
        RecordType::TXT,
    )
    .await?;
    assert_eq!(m.answers.len(), 40);
    Ok(())
}

#[tokio::test]
async fn upstream_down_is_servfail_not_a_hang() -> Result<()> {
    // One upstream refuses (nothing listens: ICMP unreachable), one swallows queries.
    let refused = UdpSocket::bind("127.0.0.1:0").await?.local_addr()?;
    let black_hole = UdpSocket::bind("127.0.0.1:0").await?;
    let f = start(vec![refused, black_hole.local_addr()?], true).await?;
    for _ in 0..5 {
        let m = tokio::time::timeout(
            Duration::from_secs(5),
            raw_udp(f.addr, "www.example.com.", RecordType::A, None),
        )
        .await
        .context("no answer at all")??;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    }
    // Cluster names are unaffected.
    let m = raw_udp(
        f.addr,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
        None,
    )
    .await?;
    assert_eq!(rdatas(&m), ["A 10.96.0.1"]);
    drop(black_hole);
    Ok(())
}

#[tokio::test]
async fn malformed_flood_leaves_the_server_answering() -> Result<()> {
    let f = start(vec![], true).await?;
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let valid = {
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("kubernetes.default.svc.cluster.local.")?,
            RecordType::A,
        ));
        m.to_vec()?
    };
    // Deterministic garbage: truncations and bit flips of a valid query, random bytes, huge
    // counts, compression loops, responses (QR set).
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..20_000u32 {
        let packet: Vec<u8> = match i % 5 {
            0 => valid[..(next() as usize) % valid.len()].to_vec(),
            1 => {
                let mut p = valid.clone();
                let at = (next() as usize) % p.len();
                p[at] ^= 1 << (next() % 8);
                p
            }
            2 => (0..(next() % 600)).map(|_| next() as u8).collect(),
            3 => {
                let mut p = valid.clone();
                p[6..12].copy_from_slice(&[0xff; 6]);
                p.extend([0xc0, 0x0c, 0xc0, 0x0c]);
                p
            }
            _ => {
                let mut p = valid.clone();
                p[2] |= 0x80;
                p
            }
        };
        let _ = sock.send_to(&packet, f.addr).await;
        if i % 500 == 0 {
            // Let the server drain its socket buffers now and then (this is not a load test).
            tokio::task::yield_now().await;
        }
    }
    // Garbage over TCP: a length prefix promising more than is sent, then closing.
    let mut tcp = TcpStream::connect(f.addr).await?;
    tcp.write_all(&[0xff, 0xff, 1, 2, 3]).await?;
    drop(tcp);
    let mut tcp = TcpStream::connect(f.addr).await?;
    tcp.write_all(&[0x00, 0x03, 1, 2, 3]).await?;
    drop(tcp);

    let mut answered = false;
    for _ in 0..20 {
        if let Ok(Ok(m)) = tokio::time::timeout(
            Duration::from_secs(1),
            raw_udp(
                f.addr,
                "kubernetes.default.svc.cluster.local.",
                RecordType::A,
                None,
            ),
        )
        .await
        {
            assert_eq!(rdatas(&m), ["A 10.96.0.1"]);
            answered = true;
            break;
        }
    }
    assert!(answered, "no answer after the flood");
    battery(&mut tcp_client(f.addr).await?).await?;
    Ok(())
}

/// `dig` (dnsutils, installed by scripts/bootstrap) as a second, independent client.
fn dig(addr: SocketAddr, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &addr.port().to_string(),
            "+time=2",
            "+tries=1",
        ])
        .args(args)
        .output()
        .context("dig not found: scripts/bootstrap installs dnsutils")?;
    if !out.status.success() {
        bail!("dig {args:?}: {}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_agrees() -> Result<()> {
    let up = start_upstream().await?;
    let f = start(vec![up.addr], true).await?;
    let addr = f.addr;
    tokio::task::spawn_blocking(move || -> Result<()> {
        let short = |args: &[&str]| -> Result<Vec<String>> {
            let mut all = vec!["+short"];
            all.extend_from_slice(args);
            let mut v: Vec<String> = dig(addr, &all)?.lines().map(str::to_string).collect();
            v.sort();
            Ok(v)
        };
        assert_eq!(
            short(&["kubernetes.default.svc.cluster.local", "A"])?,
            ["10.96.0.1"]
        );
        assert_eq!(
            short(&["+tcp", "dual.default.svc.cluster.local", "AAAA"])?,
            ["fd00:10:96::20"]
        );
        assert_eq!(
            short(&["-x", "10.96.0.10"])?,
            ["kube-dns.kube-system.svc.cluster.local."]
        );
        assert_eq!(
            short(&["-x", "fd00:10:96::20"])?,
            ["dual.default.svc.cluster.local."]
        );
        assert_eq!(
            short(&[
                "_dns-tcp._tcp.kube-dns.kube-system.svc.cluster.local",
                "SRV"
            ])?,
            ["0 100 53 kube-dns.kube-system.svc.cluster.local."]
        );
        assert_eq!(short(&["dns-version.cluster.local", "TXT"])?, ["\"1.1.0\""]);
        assert_eq!(short(&["www.example.com", "A"])?, ["192.0.2.53"]);
        assert_eq!(
            short(&["ext.default.svc.cluster.local", "A"])?,
            ["192.0.2.53", "www.example.com."]
        );
        let full = dig(addr, &["nope.default.svc.cluster.local", "A"])?;
        assert!(full.contains("status: NXDOMAIN"), "{full}");
        assert!(full.contains("flags: qr aa rd ra"), "{full}");
        assert!(full.contains("AUTHORITY: 1"), "{full}");
        let full = dig(addr, &["default.svc.cluster.local", "A"])?;
        assert!(
            full.contains("status: NOERROR") && full.contains("ANSWER: 0"),
            "{full}"
        );
        Ok(())
    })
    .await?
}
