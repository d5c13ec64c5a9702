//! Resource quantities as the sandbox needs them (millicores, bytes), over `skiff_api::quantity`.

use skiff_api::quantity::{parse_milli, parse_units};

fn checked(s: &str, value: Option<i128>) -> Result<u64, String> {
    let value = value
        .ok_or_else(|| format!("{s:?} is not a quantity; use forms like 500m, 2, 128Mi, 1G"))?;
    if value < 0 {
        return Err(format!("{s:?} is not a quantity (negative)"));
    }
    u64::try_from(value).map_err(|_| format!("{s:?}: quantity too large"))
}

/// CPU in millicores, rounded up (`250m` → 250, `1.5` → 1500).
pub fn cpu_millis(s: &str) -> Result<u64, String> {
    checked(s, parse_milli(s))
}

/// Memory in bytes, rounded up (`128Mi` → 134217728, `1G` → 10^9).
pub fn bytes(s: &str) -> Result<u64, String> {
    checked(s, parse_units(s))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cpu() {
        assert_eq!(cpu_millis("250m").unwrap(), 250);
        assert_eq!(cpu_millis("1.5").unwrap(), 1500);
        assert_eq!(cpu_millis("2").unwrap(), 2000);
        assert_eq!(cpu_millis("100u").unwrap(), 1);
        assert_eq!(cpu_millis("1e-3").unwrap(), 1);
    }

    #[test]
    fn memory() {
        assert_eq!(bytes("128Mi").unwrap(), 128 << 20);
        assert_eq!(bytes("1G").unwrap(), 1_000_000_000);
        assert_eq!(bytes("1.5Gi").unwrap(), 3 << 29);
        assert_eq!(bytes("2e3").unwrap(), 2000);
        assert_eq!(bytes("1k").unwrap(), 1000);
        assert_eq!(bytes("+64Ki").unwrap(), 65536);
    }

    #[test]
    fn rejects_garbage_naming_it() {
        for bad in [
            "",
            "abc",
            "-1",
            "1.2.3",
            "5X",
            "1e999",
            "99999999999999999999999999999999999999999Ei",
        ] {
            let err = bytes(bad).unwrap_err();
            assert!(
                err.contains(&format!("{bad:?}")) || err.contains("too large"),
                "{bad}: {err}"
            );
        }
    }
}
