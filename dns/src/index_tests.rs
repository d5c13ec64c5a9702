//! Incremental updates give the same zone as a full build of the same objects: after every step
//! of a scripted and of a pseudo-random sequence of Service, EndpointSlice and Pod changes, the
//! snapshot the index hands out holds exactly the names, RRsets and records (ENTs included) that
//! `Snapshot::build` makes from scratch, and answers the same.

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType};

use super::Index;
use crate::fixtures::{self, cluster};
use crate::model::{Key, Model, PodInfo, ServiceInfo, SliceInfo};
use crate::snapshot::{PodRecords, Snapshot, ZoneSettings};

fn settings(pods: PodRecords) -> ZoneSettings {
    ZoneSettings::new("cluster.local", 5, pods).expect("settings")
}

/// Everything but the SOA (its serial is the time of the last change, which differs).
fn zone_without_soa(s: &Snapshot) -> Vec<String> {
    let dump = s.dump();
    assert_eq!(
        dump.iter()
            .filter(|l| l.starts_with("cluster.local. 6 "))
            .count(),
        1,
        "one SOA"
    );
    dump.into_iter()
        .filter(|l| !l.starts_with("cluster.local. 6 "))
        .collect()
}

/// Every node but the apex's, raw, sorted by name.
fn nodes(s: &Snapshot) -> Vec<(Vec<u8>, Vec<u8>)> {
    let apex = s.settings.zone.clone();
    let mut v: Vec<(Vec<u8>, Vec<u8>)> = s
        .shards
        .iter()
        .flat_map(|sh| sh.iter())
        .filter(|(name, _)| name[..] != apex[..])
        .map(|(name, node)| (name.to_vec(), node.0.to_vec()))
        .collect();
    v.sort();
    v
}

/// The model and the index side by side, changed together.
struct Pair {
    settings: ZoneSettings,
    model: Model,
    index: Index,
}

impl Pair {
    fn new(pods: PodRecords) -> Pair {
        let settings = settings(pods);
        Pair {
            index: Index::new(&settings),
            settings,
            model: Model::default(),
        }
    }

    fn service(&mut self, svc: &k8s_openapi::api::core::v1::Service) {
        let info = ServiceInfo::from_service(svc).expect("service");
        self.model.services.insert(info.key.clone(), info.clone());
        self.index.set_service(info.key.clone(), Some(info));
    }

    fn delete_service(&mut self, ns: &str, name: &str) {
        let k = key(ns, name);
        self.model.services.remove(&k);
        self.index.set_service(k, None);
    }

    fn slice(&mut self, slice: &k8s_openapi::api::discovery::v1::EndpointSlice) {
        let info = SliceInfo::from_slice(slice).expect("slice");
        self.model.slices.insert(info.key.clone(), info.clone());
        self.index.set_slice(info.key.clone(), Some(info));
    }

    fn delete_slice(&mut self, ns: &str, name: &str) {
        let k = key(ns, name);
        self.model.slices.remove(&k);
        self.index.set_slice(k, None);
    }

    fn pod(&mut self, pod: &k8s_openapi::api::core::v1::Pod) {
        let info = PodInfo::from_pod(pod).expect("pod");
        self.model.pods.insert(info.key.clone(), info.clone());
        self.index.set_pod(info.key.clone(), Some(info));
    }

    fn delete_pod(&mut self, ns: &str, name: &str) {
        let k = key(ns, name);
        self.model.pods.remove(&k);
        self.index.set_pod(k, None);
    }

    /// Takes the incremental snapshot and checks it against a full build.
    fn check(&mut self, step: &str) -> Snapshot {
        let incremental = self.index.snapshot();
        let full = Snapshot::build(&self.settings, &self.model);
        assert_eq!(
            zone_without_soa(&incremental),
            zone_without_soa(&full),
            "after {step}"
        );
        assert_eq!(incremental.len(), full.len(), "names after {step}");
        // The bookkeeping too (reasons to exist, record counts): everything but the apex,
        // whose SOA serial differs.
        assert_eq!(nodes(&incremental), nodes(&full), "nodes after {step}");
        assert_eq!(self.index.pending(), 0);
        for (name, rtype) in QUESTIONS {
            assert_eq!(
                answer(&incremental, name, *rtype),
                answer(&full, name, *rtype),
                "{name} {rtype} after {step}"
            );
        }
        incremental
    }
}

const QUESTIONS: &[(&str, RecordType)] = &[
    ("kubernetes.default.svc.cluster.local.", RecordType::A),
    ("web.default.svc.cluster.local.", RecordType::A),
    ("web-0.web.default.svc.cluster.local.", RecordType::AAAA),
    ("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV),
    (
        "_http._tcp.twin.default.svc.cluster.local.",
        RecordType::SRV,
    ),
    ("5.0.244.10.in-addr.arpa.", RecordType::PTR),
    ("10-244-0-5.default.pod.cluster.local.", RecordType::A),
    ("default.svc.cluster.local.", RecordType::A),
    ("other.svc.cluster.local.", RecordType::A),
    ("cluster.local.", RecordType::NS),
    ("ns.dns.cluster.local.", RecordType::A),
    ("nope.default.svc.cluster.local.", RecordType::A),
];

/// The answer's header and records, as text (the SOA's serial cut off).
fn answer(s: &Snapshot, name: &str, rtype: RecordType) -> Vec<String> {
    let mut m = Message::query();
    m.add_query(hickory_proto::op::Query::query(
        Name::from_ascii(name).expect("name"),
        rtype,
    ));
    let mut out = Vec::new();
    if !crate::respond(s, &m.to_vec().expect("encode"), &mut out) {
        return vec!["forwarded".into()];
    }
    let r = Message::from_vec(&out).expect("decode");
    let mut lines = vec![format!("{:?}", r.metadata.response_code)];
    for rr in r.answers.iter().chain(&r.additionals) {
        lines.push(format!("{} {} {}", rr.name, rr.record_type(), rr.data));
    }
    lines.push(format!("authority {}", r.authorities.len()));
    lines
}

fn key(ns: &str, name: &str) -> Key {
    Key {
        namespace: ns.into(),
        name: name.into(),
    }
}

#[test]
fn scripted_changes_match_a_full_build() {
    for mode in [PodRecords::Insecure, PodRecords::Verified] {
        let mut p = Pair::new(mode);
        p.check("nothing");
        let (services, slices, pods) = cluster();
        // One object at a time: slices before their Service for half of them.
        for s in &slices[..2] {
            p.slice(s);
            p.check("a slice without its Service");
        }
        for s in &services {
            p.service(s);
            p.check("a Service");
        }
        for s in &slices[2..] {
            p.slice(s);
            p.check("a slice");
        }
        for pod in &pods {
            p.pod(pod);
            p.check("a pod");
        }
        // A second headless Service selecting the same pod: PTR with two targets, then one.
        p.service(&fixtures::headless(
            "default",
            "twin",
            &[("http", "TCP", 8080)],
        ));
        p.slice(&fixtures::slice(
            "default",
            "twin-1",
            "twin",
            &[("10.244.0.5", Some("web-0"), true)],
            &[("http", "TCP", 8080)],
        ));
        p.check("a twin Service sharing an endpoint");
        p.delete_slice("default", "twin-1");
        p.check("the twin's slice gone");
        // Several changes folded into one update.
        p.service(&fixtures::service(
            "default",
            "kubernetes",
            &["10.96.0.2"],
            &[("https", "TCP", 443), ("dns", "UDP", 53)],
        ));
        p.service(&fixtures::service(
            "kube-system",
            "kube-dns",
            &["10.96.0.53"],
            &[],
        ));
        p.delete_service("other", "api");
        p.check("a burst: new address, new port, nameserver moved, a namespace emptied");
        // A slice moving to another Service (its label changed), endpoints turning unready.
        p.slice(&fixtures::slice(
            "default",
            "web-abc",
            "twin",
            &[
                ("10.244.0.6", None, true),
                ("10.244.0.7", Some("web-2"), true),
            ],
            &[("http", "TCP", 8080)],
        ));
        p.check("a slice relabelled");
        p.slice(&fixtures::slice(
            "default",
            "web-v6",
            "web",
            &[("fd00:10:244::5", Some("web-0"), false)],
            &[("http", "TCP", 8080)],
        ));
        p.check("the last ready endpoint of a Service unready");
        // ClusterIP → headless, headless → ExternalName.
        p.service(&fixtures::headless(
            "default",
            "dual",
            &[("http", "TCP", 80)],
        ));
        p.service(&fixtures::external_name("default", "web", "example.org"));
        p.check("kinds changed");
        // Two hostNetwork pods with one address; one goes.
        p.pod(&fixtures::pod("default", "host-a", &["10.0.0.1"]));
        p.pod(&fixtures::pod("default", "host-b", &["10.0.0.1"]));
        p.check("pods sharing an address");
        p.delete_pod("default", "host-a");
        p.check("one of them gone");
        // Everything deleted: back to the zone's own records.
        for s in &services {
            let k = ServiceInfo::from_service(s).expect("service").key;
            p.delete_service(&k.namespace, &k.name);
        }
        for name in ["twin", "dual", "web"] {
            p.delete_service("default", name);
        }
        for s in &slices {
            let k = SliceInfo::from_slice(s).expect("slice").key;
            p.delete_slice(&k.namespace, &k.name);
        }
        for name in ["web-0", "host-b"] {
            p.delete_pod("default", name);
        }
        let empty = p.check("everything deleted");
        let fresh = Snapshot::build(&settings(mode), &Model::default());
        assert_eq!(zone_without_soa(&empty), zone_without_soa(&fresh));
    }
}

/// A small deterministic generator (xorshift), so failures replay.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn random_changes_match_a_full_build() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut p = Pair::new(PodRecords::Verified);
    let names = ["a", "b", "c", "d", "e", "f"];
    let namespaces = ["x", "y"];
    for step in 0..400 {
        let ns = namespaces[rng.below(namespaces.len())];
        let name = names[rng.below(names.len())];
        let ip = |rng: &mut Rng| format!("10.244.0.{}", rng.below(6));
        match rng.below(9) {
            0 => p.service(&fixtures::service(
                ns,
                name,
                &[&format!("10.96.0.{}", rng.below(4))],
                &[("http", "TCP", 80)],
            )),
            1 | 2 => p.service(&fixtures::headless(ns, name, &[("http", "TCP", 80)])),
            3 => p.service(&fixtures::external_name(ns, name, "example.org")),
            4 => p.delete_service(ns, name),
            5 | 6 => {
                let (a, b) = (ip(&mut rng), ip(&mut rng));
                let host = ["h0", "h1"][rng.below(2)];
                let ready = rng.below(3) > 0;
                p.slice(&fixtures::slice(
                    ns,
                    &format!("s{}", rng.below(4)),
                    name,
                    &[(&a, Some(host), ready), (&b, None, true)],
                    &[("http", "TCP", 80 + rng.below(2) as i32)],
                ));
            }
            7 => p.delete_slice(ns, &format!("s{}", rng.below(4))),
            _ => {
                if rng.below(2) == 0 {
                    p.pod(&fixtures::pod(ns, name, &[&ip(&mut rng)]));
                } else {
                    p.delete_pod(ns, name);
                }
            }
        }
        // Sometimes several changes go into one update, as a debounced burst does.
        if rng.below(3) == 0 {
            p.check(&format!("random step {step}"));
        }
    }
    p.check("the end");
}

#[test]
fn an_update_shares_the_shards_it_did_not_touch() {
    let settings = settings(PodRecords::Insecure);
    let mut index = Index::new(&settings);
    for i in 0..500 {
        let s = fixtures::service(
            "default",
            &format!("s{i}"),
            &[&format!("10.96.{}.{}", i / 256, i % 256)],
            &[],
        );
        let info = ServiceInfo::from_service(&s).expect("service");
        index.set_service(info.key.clone(), Some(info));
    }
    let before = index.snapshot();
    let s = fixtures::service("default", "s7", &["10.96.9.9"], &[]);
    let info = ServiceInfo::from_service(&s).expect("service");
    assert!(index.set_service(info.key.clone(), Some(info.clone())));
    assert!(!index.set_service(info.key.clone(), Some(info)), "no-op");
    let after = index.snapshot();
    let changed = before
        .shards
        .iter()
        .zip(&after.shards)
        .filter(|(a, b)| !std::sync::Arc::ptr_eq(a, b))
        .count();
    // The A name, two PTR names, and the apex (the SOA serial) at most.
    assert!(changed <= 4, "{changed} shards copied for one change");
    assert!(changed >= 2, "the change is visible");
}

#[test]
fn a_relist_replaces_what_changed_while_the_watch_was_down() {
    let settings = settings(PodRecords::Verified);
    let (services, slices, pods) = cluster();
    let mut index = Index::from_model(&settings, &Model::from_objects(&services, &slices, &pods));
    index.snapshot();
    // While disconnected: `other/api` deleted, `default/kubernetes` moved, a Service, a slice
    // and a pod added, `web-abc` deleted.
    let mut after = services.clone();
    after.retain(|s| s.metadata.name.as_deref() != Some("api"));
    after.push(fixtures::service(
        "default",
        "kubernetes",
        &["10.96.0.2"],
        &[],
    ));
    after.push(fixtures::headless("late", "db", &[("pg", "TCP", 5432)]));
    let mut after_slices: Vec<_> = slices
        .iter()
        .filter(|s| s.metadata.name.as_deref() != Some("web-abc"))
        .cloned()
        .collect();
    after_slices.push(fixtures::slice(
        "late",
        "db-1",
        "db",
        &[("10.244.3.1", Some("db-0"), true)],
        &[("pg", "TCP", 5432)],
    ));
    let mut after_pods = pods.clone();
    after_pods.push(fixtures::pod("late", "db-0", &["10.244.3.1"]));
    let want = Model::from_objects(&after, &after_slices, &after_pods);

    assert!(index.replace_services(want.services.clone()));
    assert!(index.replace_slices(want.slices.clone()));
    assert!(index.replace_pods(want.pods.clone()));
    let relisted = index.snapshot();
    let full = Snapshot::build(&settings, &want);
    assert_eq!(zone_without_soa(&relisted), zone_without_soa(&full));
    assert_eq!(nodes(&relisted), nodes(&full));
    // The same relist again changes nothing.
    assert!(!index.replace_services(want.services.clone()));
    assert!(!index.replace_slices(want.slices.clone()));
    assert!(!index.replace_pods(want.pods));
    assert_eq!(index.pending(), 0);
}
