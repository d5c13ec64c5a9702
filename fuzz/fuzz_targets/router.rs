//! Fuzz the request router: path and query parsing, then the label and field selectors a
//! query carries, for every kind. Nothing here may panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_api::kinds::Kind;
use skiff_apiserver::selectors::{FieldSelector, LabelSelector};
use skiff_apiserver::server::routes;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    let _ = routes::parse(path);
    for (key, value) in routes::parse_query(query) {
        match key.as_str() {
            "labelSelector" => {
                if let Ok(selector) = LabelSelector::parse(&value) {
                    let _ = selector.matches(&Default::default());
                }
            }
            "fieldSelector" => {
                for kind in Kind::all() {
                    let _ = FieldSelector::parse(&value, kind);
                }
            }
            _ => {}
        }
    }
});
