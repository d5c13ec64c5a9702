//! The answer path, organised by section of the Kubernetes DNS specification (schema 1.1.0)
//! and by RFC for negative answers. Each test sends a real query packet through
//! [`crate::respond`] and decodes the response with hickory-proto, so the encoder is checked by
//! an independent decoder.

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use super::{Outcome, Question, answer};
use crate::fixtures::{self, cluster};
use crate::model::Model;
use crate::names::to_wire;
use crate::snapshot::{PodRecords, Snapshot, ZoneSettings};

fn build(pods: PodRecords, ttl: u32) -> Snapshot {
    let (s, e, p) = cluster();
    let settings = ZoneSettings::new("cluster.local", ttl, pods).expect("settings");
    Snapshot::build(&settings, &Model::from_objects(&s, &e, &p))
}

fn snap() -> Snapshot {
    build(PodRecords::Insecure, 5)
}

fn packet(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(hickory_proto::op::Query::query(
        Name::from_ascii(name).expect("name"),
        rtype,
    ));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().expect("encode")
}

/// Sends a query through the synchronous server path; `None` when it needs an upstream.
fn ask_with(s: &Snapshot, name: &str, rtype: RecordType, edns: Option<u16>) -> Option<Message> {
    let mut out = Vec::new();
    crate::respond(s, &packet(name, rtype, edns), &mut out)
        .then(|| Message::from_vec(&out).expect("decodable response"))
}

fn ask(s: &Snapshot, name: &str, rtype: RecordType) -> Message {
    ask_with(s, name, rtype, None).expect("answered from cluster data")
}

/// `name ttl TYPE rdata` per answer record, in order.
fn answers(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Asserts a positive authoritative answer with exactly these records (any order).
fn assert_records(m: &Message, want: &[&str]) {
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert!(m.metadata.authoritative, "AA bit");
    assert!(m.authorities.is_empty(), "positive answers carry no SOA");
    assert_eq!(
        sorted(answers(m)),
        sorted(want.iter().map(|s| s.to_string()).collect())
    );
}

/// Asserts a negative answer (RFC 2308): rcode, no answers, the zone SOA with TTL = minimum = ttl.
fn assert_negative(m: &Message, rcode: ResponseCode, ttl: u32) {
    assert_eq!(m.metadata.response_code, rcode, "{m:?}");
    assert!(m.metadata.authoritative, "AA bit on negative answers");
    assert!(m.answers.is_empty(), "{:?}", answers(m));
    assert_eq!(m.authorities.len(), 1, "one SOA in authority");
    let soa = &m.authorities[0];
    assert_eq!(soa.name, Name::from_ascii("cluster.local.").expect("name"));
    assert_eq!(soa.ttl, ttl);
    let RData::SOA(data) = &soa.data else {
        panic!("authority is not a SOA: {soa:?}")
    };
    assert_eq!(data.minimum, ttl);
}

fn nxdomain(s: &Snapshot, name: &str, rtype: RecordType) {
    assert_negative(&ask(s, name, rtype), ResponseCode::NXDomain, s.settings.ttl);
}

fn nodata(s: &Snapshot, name: &str, rtype: RecordType) {
    assert_negative(&ask(s, name, rtype), ResponseCode::NoError, s.settings.ttl);
}

mod spec_2_1_definitions {
    use super::*;

    #[test]
    fn comparisons_are_case_insensitive_and_the_question_is_echoed() {
        let s = snap();
        let m = ask(&s, "KUBERNETES.Default.SVC.Cluster.LOCAL.", RecordType::A);
        assert_eq!(
            m.queries[0].name().to_ascii(),
            "KUBERNETES.Default.SVC.Cluster.LOCAL."
        );
        assert_eq!(
            answers(&m),
            ["KUBERNETES.Default.SVC.Cluster.LOCAL. 5 A 10.96.0.1"]
        );
    }

    #[test]
    fn ready_endpoints_only_unless_the_service_publishes_not_ready_ones() {
        let s = snap();
        assert_records(
            &ask(&s, "web.default.svc.cluster.local.", RecordType::A),
            &[
                "web.default.svc.cluster.local. 5 A 10.244.0.5",
                "web.default.svc.cluster.local. 5 A 10.244.0.6",
            ],
        );
        // spec.publishNotReadyAddresses
        assert_records(
            &ask(&s, "publish.default.svc.cluster.local.", RecordType::A),
            &["publish.default.svc.cluster.local. 5 A 10.244.0.11"],
        );
        assert_records(
            &ask(&s, "p-0.publish.default.svc.cluster.local.", RecordType::A),
            &["p-0.publish.default.svc.cluster.local. 5 A 10.244.0.11"],
        );
        // the legacy tolerate-unready-endpoints annotation
        assert_records(
            &ask(&s, "tolerant.default.svc.cluster.local.", RecordType::A),
            &["tolerant.default.svc.cluster.local. 5 A 10.244.0.10"],
        );
    }
}

mod spec_2_2_schema_version {
    use super::*;

    #[test]
    fn dns_version_txt() {
        let s = snap();
        let m = ask(&s, "dns-version.cluster.local.", RecordType::TXT);
        assert_records(&m, &["dns-version.cluster.local. 5 TXT 1.1.0"]);
    }
}

mod spec_2_3_cluster_ip {
    use super::*;

    #[test]
    fn a_record() {
        let s = snap();
        assert_records(
            &ask(&s, "kubernetes.default.svc.cluster.local.", RecordType::A),
            &["kubernetes.default.svc.cluster.local. 5 A 10.96.0.1"],
        );
        nodata(
            &s,
            "kubernetes.default.svc.cluster.local.",
            RecordType::AAAA,
        );
    }

    #[test]
    fn aaaa_records_by_family() {
        let s = snap();
        assert_records(
            &ask(&s, "dual.default.svc.cluster.local.", RecordType::A),
            &["dual.default.svc.cluster.local. 5 A 10.96.0.20"],
        );
        assert_records(
            &ask(&s, "dual.default.svc.cluster.local.", RecordType::AAAA),
            &["dual.default.svc.cluster.local. 5 AAAA fd00:10:96::20"],
        );
        assert_records(
            &ask(&s, "v6only.default.svc.cluster.local.", RecordType::AAAA),
            &["v6only.default.svc.cluster.local. 5 AAAA fd00:10:96::30"],
        );
        nodata(&s, "v6only.default.svc.cluster.local.", RecordType::A);
    }

    #[test]
    fn srv_for_named_ports_with_their_protocol() {
        let s = snap();
        assert_records(
            &ask(
                &s,
                "_https._tcp.kubernetes.default.svc.cluster.local.",
                RecordType::SRV,
            ),
            &[
                "_https._tcp.kubernetes.default.svc.cluster.local. 5 SRV 0 100 443 kubernetes.default.svc.cluster.local.",
            ],
        );
        assert_records(
            &ask(
                &s,
                "_dns._udp.kube-dns.kube-system.svc.cluster.local.",
                RecordType::SRV,
            ),
            &[
                "_dns._udp.kube-dns.kube-system.svc.cluster.local. 5 SRV 0 100 53 kube-dns.kube-system.svc.cluster.local.",
            ],
        );
        assert_records(
            &ask(
                &s,
                "_metrics._udp.api.other.svc.cluster.local.",
                RecordType::SRV,
            ),
            &[
                "_metrics._udp.api.other.svc.cluster.local. 5 SRV 0 100 9100 api.other.svc.cluster.local.",
            ],
        );
        // The wrong protocol, and unnamed ports, have no SRV.
        nxdomain(
            &s,
            "_dns._tcp.kube-dns.kube-system.svc.cluster.local.",
            RecordType::SRV,
        );
        nxdomain(
            &s,
            "_9153._tcp.kube-dns.kube-system.svc.cluster.local.",
            RecordType::SRV,
        );
        // `_tcp.<service>` exists (it has children): NODATA.
        nodata(
            &s,
            "_tcp.kube-dns.kube-system.svc.cluster.local.",
            RecordType::SRV,
        );
    }

    #[test]
    fn ptr_for_cluster_ips() {
        let s = snap();
        assert_records(
            &ask(&s, "1.0.96.10.in-addr.arpa.", RecordType::PTR),
            &["1.0.96.10.in-addr.arpa. 5 PTR kubernetes.default.svc.cluster.local."],
        );
        let v6 = "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa.";
        assert_records(
            &ask(&s, v6, RecordType::PTR),
            &[&format!("{v6} 5 PTR dual.default.svc.cluster.local.")],
        );
    }
}

mod spec_2_4_headless {
    use super::*;

    #[test]
    fn a_and_aaaa_per_ready_endpoint() {
        let s = snap();
        assert_records(
            &ask(&s, "web.default.svc.cluster.local.", RecordType::AAAA),
            &["web.default.svc.cluster.local. 5 AAAA fd00:10:244::5"],
        );
    }

    #[test]
    fn per_endpoint_names_by_hostname_or_address() {
        let s = snap();
        assert_records(
            &ask(&s, "web-0.web.default.svc.cluster.local.", RecordType::A),
            &["web-0.web.default.svc.cluster.local. 5 A 10.244.0.5"],
        );
        assert_records(
            &ask(&s, "web-0.web.default.svc.cluster.local.", RecordType::AAAA),
            &["web-0.web.default.svc.cluster.local. 5 AAAA fd00:10:244::5"],
        );
        assert_records(
            &ask(
                &s,
                "10-244-0-6.web.default.svc.cluster.local.",
                RecordType::A,
            ),
            &["10-244-0-6.web.default.svc.cluster.local. 5 A 10.244.0.6"],
        );
        // Not ready: no name.
        nxdomain(&s, "web-2.web.default.svc.cluster.local.", RecordType::A);
    }

    #[test]
    fn no_ready_endpoint_is_nxdomain() {
        let s = snap();
        nxdomain(&s, "empty.default.svc.cluster.local.", RecordType::A);
        nxdomain(
            &s,
            "_http._tcp.empty.default.svc.cluster.local.",
            RecordType::SRV,
        );
    }

    #[test]
    fn srv_per_endpoint_and_port_with_the_same_names_as_a() {
        let s = snap();
        assert_records(
            &ask(
                &s,
                "_http._tcp.web.default.svc.cluster.local.",
                RecordType::SRV,
            ),
            &[
                "_http._tcp.web.default.svc.cluster.local. 5 SRV 0 50 8080 10-244-0-6.web.default.svc.cluster.local.",
                "_http._tcp.web.default.svc.cluster.local. 5 SRV 0 50 8080 web-0.web.default.svc.cluster.local.",
            ],
        );
    }

    #[test]
    fn ptr_per_endpoint_with_the_same_names_as_a() {
        let s = snap();
        assert_records(
            &ask(&s, "5.0.244.10.in-addr.arpa.", RecordType::PTR),
            &["5.0.244.10.in-addr.arpa. 5 PTR web-0.web.default.svc.cluster.local."],
        );
        assert_records(
            &ask(&s, "6.0.244.10.in-addr.arpa.", RecordType::PTR),
            &["6.0.244.10.in-addr.arpa. 5 PTR 10-244-0-6.web.default.svc.cluster.local."],
        );
        let v6 = "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa.";
        assert_records(
            &ask(&s, v6, RecordType::PTR),
            &[&format!("{v6} 5 PTR web-0.web.default.svc.cluster.local.")],
        );
    }
}

mod spec_2_5_external_name {
    use super::*;

    #[test]
    fn cname_to_an_outside_name_is_chased_upstream() {
        let s = snap();
        let name = to_wire("ext.default.svc.cluster.local").expect("name");
        let q = Question {
            name: &name,
            qtype: 1,
            qclass: 1,
        };
        let Outcome::Chase { answer: a, target } = answer(&s.settings.zone, Some(&s), &q) else {
            panic!("not a chase")
        };
        assert_eq!(target, to_wire("www.example.com").expect("name").as_slice());
        assert_eq!(a.records.len(), 1);
        // Without an upstream, the synchronous path does not answer it.
        assert!(ask_with(&s, "ext.default.svc.cluster.local.", RecordType::A, None).is_none());
        // Asked for the CNAME itself, it is an ordinary answer.
        assert_records(
            &ask(&s, "ext.default.svc.cluster.local.", RecordType::CNAME),
            &["ext.default.svc.cluster.local. 5 CNAME www.example.com."],
        );
    }

    #[test]
    fn cname_inside_the_zone_is_followed_here() {
        let s = snap();
        assert_records(
            &ask(&s, "alias.default.svc.cluster.local.", RecordType::A),
            &[
                "alias.default.svc.cluster.local. 5 CNAME kubernetes.default.svc.cluster.local.",
                "kubernetes.default.svc.cluster.local. 5 A 10.96.0.1",
            ],
        );
        // NODATA at the end of the chain keeps the CNAME and adds the SOA (RFC 2308 §2.2).
        let m = ask(&s, "alias.default.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(answers(&m).len(), 1);
        assert_eq!(m.authorities.len(), 1);
    }
}

mod spec_2_6_pods {
    use super::*;

    #[test]
    fn insecure_answers_any_address_label() {
        let s = snap();
        assert_records(
            &ask(&s, "10-244-0-99.default.pod.cluster.local.", RecordType::A),
            &["10-244-0-99.default.pod.cluster.local. 5 A 10.244.0.99"],
        );
        assert_records(
            &ask(
                &s,
                "fd00-10-244--5.anyns.pod.cluster.local.",
                RecordType::AAAA,
            ),
            &["fd00-10-244--5.anyns.pod.cluster.local. 5 AAAA fd00:10:244::5"],
        );
        nodata(
            &s,
            "10-244-0-99.default.pod.cluster.local.",
            RecordType::AAAA,
        );
        nxdomain(
            &s,
            "not-an-address.default.pod.cluster.local.",
            RecordType::A,
        );
        nodata(&s, "default.pod.cluster.local.", RecordType::A);
    }

    #[test]
    fn verified_answers_existing_pods_only() {
        let s = build(PodRecords::Verified, 5);
        assert_records(
            &ask(&s, "10-244-0-5.default.pod.cluster.local.", RecordType::A),
            &["10-244-0-5.default.pod.cluster.local. 5 A 10.244.0.5"],
        );
        assert_records(
            &ask(
                &s,
                "fd00-10-244--5.default.pod.cluster.local.",
                RecordType::AAAA,
            ),
            &["fd00-10-244--5.default.pod.cluster.local. 5 AAAA fd00:10:244::5"],
        );
        nxdomain(&s, "10-244-0-99.default.pod.cluster.local.", RecordType::A);
        nxdomain(&s, "10-244-0-5.other.pod.cluster.local.", RecordType::A);
        nodata(&s, "default.pod.cluster.local.", RecordType::A);
    }

    #[test]
    fn disabled_answers_none() {
        let s = build(PodRecords::Disabled, 5);
        nxdomain(&s, "10-244-0-5.default.pod.cluster.local.", RecordType::A);
        nodata(&s, "pod.cluster.local.", RecordType::A);
    }
}

/// RFC 1034 §4.3.2, RFC 2308, RFC 8020: NXDOMAIN only for names that do not exist, NODATA for
/// names that exist without that type; the SOA in the authority section of both.
mod rfc_2308_negative_answers {
    use super::*;

    #[test]
    fn empty_non_terminals_are_nodata() {
        let s = snap();
        for name in [
            "cluster.local.",
            "svc.cluster.local.",
            "pod.cluster.local.",
            "default.svc.cluster.local.",
            "kube-system.svc.cluster.local.",
        ] {
            nodata(&s, name, RecordType::A);
        }
    }

    #[test]
    fn missing_names_are_nxdomain_and_nothing_exists_below_them() {
        let s = snap();
        nxdomain(&s, "nope.default.svc.cluster.local.", RecordType::A);
        nxdomain(&s, "deeper.nope.default.svc.cluster.local.", RecordType::A);
        nxdomain(&s, "nons.svc.cluster.local.", RecordType::A);
        nxdomain(&s, "other.cluster.local.", RecordType::A);
    }

    #[test]
    fn apex_soa_is_an_answer() {
        let s = snap();
        let m = ask(&s, "cluster.local.", RecordType::SOA);
        assert_eq!(m.answers.len(), 1);
        assert!(m.metadata.authoritative);
        assert!(m.authorities.is_empty());
    }

    #[test]
    fn negative_ttl_follows_the_configured_ttl() {
        let s = build(PodRecords::Insecure, 30);
        nxdomain(&s, "nope.default.svc.cluster.local.", RecordType::A);
        assert_eq!(
            ask(&s, "kubernetes.default.svc.cluster.local.", RecordType::A).answers[0].ttl,
            30
        );
    }

    #[test]
    fn any_returns_every_rrset_of_the_name() {
        let s = snap();
        let m = ask(&s, "dual.default.svc.cluster.local.", RecordType::ANY);
        assert_eq!(m.answers.len(), 2);
    }
}

mod zone_boundaries {
    use super::*;

    fn outcome(s: Option<&Snapshot>, name: &str) -> Outcome<'static> {
        let wire = to_wire(name).expect("name");
        let zone = to_wire("cluster.local").expect("zone");
        // Outcomes compared without borrowing the snapshot beyond this call.
        match answer(
            &zone,
            s,
            &Question {
                name: &wire,
                qtype: 1,
                qclass: 1,
            },
        ) {
            Outcome::Forward => Outcome::Forward,
            Outcome::Answer(a) => Outcome::Answer(super::super::Answer {
                records: Vec::new(),
                additional: Vec::new(),
                soa: &[],
                ..a
            }),
            Outcome::Chase { .. } => panic!("chase"),
        }
    }

    #[test]
    fn outside_the_zone_is_forwarded_never_nxdomain() {
        let s = snap();
        for name in [
            "example.com",
            "local",
            "xcluster.local",
            "cluster.local.example.com",
            "9.9.9.9.in-addr.arpa",
        ] {
            assert_eq!(outcome(Some(&s), name), Outcome::Forward, "{name}");
        }
    }

    #[test]
    fn servfail_in_the_zone_before_the_first_sync() {
        let Outcome::Answer(a) = outcome(None, "kubernetes.default.svc.cluster.local") else {
            panic!("forwarded")
        };
        assert_eq!(a.rcode, crate::wire::Rcode::ServFail);
        assert!(!a.authoritative);
        assert_eq!(outcome(None, "example.com"), Outcome::Forward);
    }

    #[test]
    fn other_classes_in_the_zone_are_refused() {
        let s = snap();
        let mut m = Message::query();
        let mut q = hickory_proto::op::Query::query(
            Name::from_ascii("kubernetes.default.svc.cluster.local.").expect("n"),
            RecordType::A,
        );
        q.set_query_class(DNSClass::CH);
        m.add_query(q);
        let mut out = Vec::new();
        assert!(crate::respond(&s, &m.to_vec().expect("encode"), &mut out));
        assert_eq!(
            Message::from_vec(&out)
                .expect("decode")
                .metadata
                .response_code,
            ResponseCode::Refused
        );
    }
}

mod transport_rules {
    use super::*;

    fn big() -> Snapshot {
        let eps: Vec<String> = (0..100).map(|i| format!("10.244.1.{i}")).collect();
        let endpoints: Vec<fixtures::Ep<'_>> =
            eps.iter().map(|a| (a.as_str(), None, true)).collect();
        let services = [fixtures::headless("default", "big", &[])];
        let slices = [fixtures::slice("default", "big-1", "big", &endpoints, &[])];
        let settings =
            ZoneSettings::new("cluster.local", 5, PodRecords::Insecure).expect("settings");
        Snapshot::build(&settings, &Model::from_objects(&services, &slices, []))
    }

    #[test]
    fn too_big_for_udp_is_truncated_with_the_question_kept() {
        let s = big();
        let m = ask(&s, "big.default.svc.cluster.local.", RecordType::A);
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        assert_eq!(m.queries.len(), 1);
        // 100 × 16 bytes does not fit 1232 either, but the OPT is kept.
        let m = ask_with(
            &s,
            "big.default.svc.cluster.local.",
            RecordType::A,
            Some(4096),
        )
        .expect("answered");
        assert!(m.metadata.truncation);
        assert!(m.edns.is_some());
    }

    #[test]
    fn edns_payload_lets_larger_answers_through() {
        let s = snap();
        let m = ask_with(
            &s,
            "web.default.svc.cluster.local.",
            RecordType::A,
            Some(1232),
        )
        .expect("answered");
        assert!(!m.metadata.truncation);
        assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    }

    #[test]
    fn unknown_edns_version_is_badvers() {
        let s = snap();
        let mut p = packet(
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
            Some(1232),
        );
        let n = p.len();
        p[n - 5] = 1; // OPT VERSION (the TTL field: extended rcode, version, flags; then RDLENGTH 0)
        let mut out = Vec::new();
        assert!(crate::respond(&s, &p, &mut out));
        let m = Message::from_vec(&out).expect("decode");
        // 16 is BADVERS in an OPT context (hickory names the shared code BADSIG).
        assert_eq!(u16::from(m.metadata.response_code), 16);
    }

    #[test]
    fn malformed_is_formerr_or_dropped() {
        let s = snap();
        let mut p = packet("kubernetes.default.svc.cluster.local.", RecordType::A, None);
        p[5] = 0; // QDCOUNT 0
        let mut out = Vec::new();
        assert!(crate::respond(&s, &p, &mut out));
        assert_eq!(
            Message::from_vec(&out)
                .expect("decode")
                .metadata
                .response_code,
            ResponseCode::FormErr
        );
        assert!(!crate::respond(&s, &p[..5], &mut out));
    }
}

/// The additional section (what CoreDNS adds): addresses of the cluster names SRV and NS point
/// at, compressed against the answer, and dropped before truncating.
mod additional_section {
    use super::*;

    fn additionals(m: &Message) -> Vec<String> {
        sorted(
            m.additionals
                .iter()
                .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
                .collect(),
        )
    }

    #[test]
    fn srv_of_a_cluster_ip_service_carries_its_address() {
        let s = snap();
        let m = ask(
            &s,
            "_https._tcp.kubernetes.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(m.answers.len(), 1);
        assert_eq!(
            additionals(&m),
            ["kubernetes.default.svc.cluster.local. A 10.96.0.1"]
        );
    }

    #[test]
    fn srv_of_a_headless_service_carries_every_target_address() {
        let s = snap();
        let m = ask(
            &s,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(
            additionals(&m),
            [
                "10-244-0-6.web.default.svc.cluster.local. A 10.244.0.6",
                "web-0.web.default.svc.cluster.local. A 10.244.0.5",
                "web-0.web.default.svc.cluster.local. AAAA fd00:10:244::5",
            ]
        );
        // Other types get none.
        let m = ask(&s, "web.default.svc.cluster.local.", RecordType::A);
        assert!(m.additionals.is_empty());
    }

    #[test]
    fn ns_at_the_apex_names_the_soa_mname_with_its_address() {
        let s = snap();
        let m = ask(&s, "cluster.local.", RecordType::NS);
        assert_records(&m, &["cluster.local. 5 NS ns.dns.cluster.local."]);
        assert_eq!(additionals(&m), ["ns.dns.cluster.local. A 10.96.0.10"]);
        let soa = ask(&s, "cluster.local.", RecordType::SOA);
        match &soa.answers[0].data {
            RData::SOA(soa) => assert_eq!(soa.mname.to_string(), "ns.dns.cluster.local."),
            other => panic!("not a SOA: {other:?}"),
        }
        assert_records(
            &ask(&s, "ns.dns.cluster.local.", RecordType::A),
            &["ns.dns.cluster.local. 5 A 10.96.0.10"],
        );
        // NS only at the apex.
        nodata(&s, "svc.cluster.local.", RecordType::NS);
    }

    #[test]
    fn additional_records_go_before_the_answer_is_truncated() {
        let eps: Vec<String> = (0..7).map(|i| format!("10.244.1.{i}")).collect();
        let endpoints: Vec<fixtures::Ep<'_>> =
            eps.iter().map(|a| (a.as_str(), None, true)).collect();
        let services = [fixtures::headless("default", "big", &[("http", "TCP", 80)])];
        let slices = [fixtures::slice(
            "default",
            "big-1",
            "big",
            &endpoints,
            &[("http", "TCP", 80)],
        )];
        let settings =
            ZoneSettings::new("cluster.local", 5, PodRecords::Insecure).expect("settings");
        let s = Snapshot::build(&settings, &Model::from_objects(&services, &slices, []));
        let name = "_http._tcp.big.default.svc.cluster.local.";
        let full = ask_with(&s, name, RecordType::SRV, Some(1232)).expect("answered");
        assert!(!full.metadata.truncation);
        assert_eq!(full.answers.len(), 7);
        assert_eq!(full.additionals.len(), 7);
        // 512 bytes hold the 7 SRV records but not their addresses too.
        let mut out = Vec::new();
        assert!(crate::respond(
            &s,
            &packet(name, RecordType::SRV, None),
            &mut out
        ));
        let small = Message::from_vec(&out).expect("decodes");
        assert!(out.len() <= 512, "{}", out.len());
        assert!(!small.metadata.truncation);
        assert_eq!(small.answers.len(), 7);
        assert!(small.additionals.is_empty());
    }
}
