//! Sizes as docker writes them on its command line.

/// Parses docker's byte sizes (`--memory 32m`, `--shm-size 1g`): a number with an
/// optional b, k, m, g, t or p suffix (binary multiples), `b`/`B` optional after it.
pub fn parse_bytes(s: &str) -> Option<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1i64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        'p' => (&t[..t.len() - 1], 1 << 50),
        _ => (t, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v >= 0.0).then_some((v * mult as f64) as i64)
}

/// Parses a boolean as docker's flags and filters take it: `true`/`1` or `false`/`0`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_docker_sizes() {
        assert_eq!(super::parse_bytes("32m"), Some(32 << 20));
        assert_eq!(super::parse_bytes("1g"), Some(1 << 30));
        assert_eq!(super::parse_bytes("512kb"), Some(512 << 10));
        assert_eq!(super::parse_bytes("100"), Some(100));
        assert_eq!(super::parse_bytes("1.5g"), Some(3 << 29));
        assert_eq!(super::parse_bytes("lots"), None);
    }
}
