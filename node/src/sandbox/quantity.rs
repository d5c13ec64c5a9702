//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`) as millicores and bytes (pure).

/// A quantity as an exact fraction `num / den`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fraction {
    num: u128,
    den: u128,
}

fn parse(s: &str) -> Result<Fraction, String> {
    let s = s.trim();
    let bad =
        |why: &str| format!("{s:?} is not a quantity ({why}); use forms like 500m, 2, 128Mi, 1G");
    let s_body = s.strip_prefix('+').unwrap_or(s);
    if s_body.starts_with('-') {
        return Err(bad("negative"));
    }
    let split = s_body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s_body.len());
    let (number, suffix) = s_body.split_at(split);
    if number.is_empty() || number == "." {
        return Err(bad("no number"));
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if frac.contains('.') {
        return Err(bad("two decimal points"));
    }
    let digits = format!("{int}{frac}");
    let overflow = || bad("too large");
    let mut num: u128 = digits.parse().map_err(|_| overflow())?;
    let mut den: u128 = 10u128.checked_pow(frac.len() as u32).ok_or_else(overflow)?;
    let (mul, div): (u128, u128) = match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().map_err(|_| bad("bad exponent"))?;
            let p = 10u128.checked_pow(e.unsigned_abs()).ok_or_else(overflow)?;
            if e >= 0 { (p, 1) } else { (1, p) }
        }
        _ => return Err(bad("unknown suffix")),
    };
    num = num.checked_mul(mul).ok_or_else(overflow)?;
    den = den.checked_mul(div).ok_or_else(overflow)?;
    Ok(Fraction { num, den })
}

fn ceil_scaled(f: Fraction, scale: u128) -> Result<u64, String> {
    let n = f.num.checked_mul(scale).ok_or("quantity too large")?;
    u64::try_from(n.div_ceil(f.den)).map_err(|_| "quantity too large".to_string())
}

/// CPU in millicores, rounded up (`250m` → 250, `1.5` → 1500).
pub fn cpu_millis(s: &str) -> Result<u64, String> {
    ceil_scaled(parse(s)?, 1000)
}

/// Memory in bytes, rounded up (`128Mi` → 134217728, `1G` → 10^9).
pub fn bytes(s: &str) -> Result<u64, String> {
    ceil_scaled(parse(s)?, 1)
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
