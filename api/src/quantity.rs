//! Kubernetes resource quantities (`100m`, `1.5`, `512Mi`, `1e3`) parsed exactly, as the scheduler compares them.

/// A quantity in nano-units: exact for every suffix upstream accepts (`n` … `E`, `Ki` … `Ei`,
/// exponents), and large enough (i128) for `Ei` times the largest mantissa a node reports.
pub fn parse_nanos(text: &str) -> Option<i128> {
    let text = text.trim();
    let (sign, rest) = match text.strip_prefix('-') {
        Some(r) => (-1, r),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let number_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    // The mantissa as an integer, with the decimal point moved `fraction.len()` places.
    let mut mantissa: i128 = 0;
    for c in whole.chars().chain(fraction.chars()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(i128::from(c.to_digit(10)?))?;
    }
    let point = i32::try_from(fraction.len()).ok()?;
    let (binary, decimal_exp) = suffix_scale(suffix)?;
    // value = mantissa * 10^(decimal_exp - point) * binary, in nano-units: * 10^9.
    let exp = decimal_exp - point + 9;
    let mut value = mantissa.checked_mul(binary)?;
    if exp >= 0 {
        value = value.checked_mul(10i128.checked_pow(u32::try_from(exp).ok()?)?)?;
    } else {
        let div = 10i128.checked_pow(u32::try_from(-exp).ok()?)?;
        // Upstream rounds a quantity finer than a nano-unit up.
        value = (value + div - 1) / div;
    }
    Some(sign * value)
}

/// (binary multiplier, decimal exponent) of a suffix.
fn suffix_scale(suffix: &str) -> Option<(i128, i32)> {
    let binary = |shift: u32| Some((1i128 << shift, 0));
    match suffix {
        "" => Some((1, 0)),
        "n" => Some((1, -9)),
        "u" => Some((1, -6)),
        "m" => Some((1, -3)),
        "k" => Some((1, 3)),
        "M" => Some((1, 6)),
        "G" => Some((1, 9)),
        "T" => Some((1, 12)),
        "P" => Some((1, 15)),
        "E" => Some((1, 18)),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        s => {
            let exp = s.strip_prefix(['e', 'E'])?;
            Some((1, exp.parse().ok()?))
        }
    }
}

/// A quantity in milli-units, rounded up (CPU is compared in millicores).
pub fn parse_milli(text: &str) -> Option<i128> {
    parse_nanos(text).map(|n| n.div_euclid(1_000_000) + i128::from(n.rem_euclid(1_000_000) != 0))
}

/// A quantity in whole units, rounded up (memory, pods, extended resources).
pub fn parse_units(text: &str) -> Option<i128> {
    parse_nanos(text)
        .map(|n| n.div_euclid(1_000_000_000) + i128::from(n.rem_euclid(1_000_000_000) != 0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cpu_in_millicores() {
        assert_eq!(parse_milli("100m"), Some(100));
        assert_eq!(parse_milli("1"), Some(1000));
        assert_eq!(parse_milli("0.5"), Some(500));
        assert_eq!(parse_milli("2.25"), Some(2250));
        assert_eq!(parse_milli("1500u"), Some(2));
        assert_eq!(parse_milli("1e3"), Some(1_000_000));
    }

    #[test]
    fn memory_in_bytes() {
        assert_eq!(parse_units("512Mi"), Some(512 << 20));
        assert_eq!(parse_units("1Gi"), Some(1 << 30));
        assert_eq!(parse_units("1G"), Some(1_000_000_000));
        assert_eq!(parse_units("128974848"), Some(128_974_848));
        assert_eq!(parse_units("129e6"), Some(129_000_000));
        assert_eq!(parse_units("1.5Ki"), Some(1536));
        assert_eq!(parse_units("110"), Some(110));
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for bad in ["", "abc", "1.2.3", "1Xi", ".", "1e", "--1"] {
            assert_eq!(parse_nanos(bad), None, "{bad}");
        }
    }
}
