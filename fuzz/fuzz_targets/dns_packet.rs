//! Fuzz the DNS server's request path on raw packets: parse, answer from a snapshot of every
//! kind of record, encode, truncate. Nothing may panic; every answer must decode as DNS with
//! the query's id; forwarded questions must decode with hickory-proto like the slow path does.
#![no_main]

use std::sync::OnceLock;

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use skiff_dns::{Model, PodRecords, Snapshot, ZoneSettings};

fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let (services, slices, pods) = skiff_dns::fixtures::cluster();
        let settings = ZoneSettings::new("cluster.local", 5, PodRecords::Insecure).expect("zone");
        Snapshot::build(&settings, &Model::from_objects(&services, &slices, &pods))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    if skiff_dns::respond(snapshot(), data, &mut out) {
        assert!(out.len() >= 12, "short answer");
        assert_eq!(out[..2], data[..2], "id not echoed");
        assert!(out.len() <= 65535);
        Message::from_vec(&out).expect("our answer decodes");
    } else {
        let _ = Message::from_vec(data);
    }
});
