//! Fuzz the manifest parser in every strictness mode, then default and validate what parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_api::manifest::{Strictness, decode_value, parse_manifests};
use skiff_api::{ValidationConfig, apply_defaults, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = ValidationConfig::default();
    for mode in [Strictness::Strict, Strictness::Warn, Strictness::Ignore] {
        let Ok(manifests) = parse_manifests("fuzz.yaml", text, mode) else {
            continue;
        };
        for m in manifests {
            let _ = decode_value(&m.raw, mode);
            let mut obj = m.object;
            let _ = validate(&obj, &config);
            apply_defaults(&mut obj);
            let _ = validate(&obj, &config);
            // Defaulting is idempotent and the result survives a JSON round trip.
            let mut again = obj.clone();
            apply_defaults(&mut again);
            assert_eq!(again, obj, "defaulting is not idempotent");
            if let Ok(v) = obj.to_value() {
                let back = decode_value(&v, Strictness::Strict);
                assert!(back.is_ok(), "defaulted object does not decode: {back:?}");
            }
        }
    }
});
