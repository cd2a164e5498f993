//! Sizes and durations printed the way docker prints them (its go-units package): decimal
//! sizes to three significant digits (`4.26MB`), binary for memory (`23.47GiB`), and
//! "2 hours ago" ages. No Rust crate formats exactly these, so they are written here.

pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", three_significant(v), UNITS[i])
}

/// Go's `%.3g` for the values human_size produces (0 <= v < 1000).
fn three_significant(v: f64) -> String {
    let digits_before = if v < 1.0 {
        1
    } else {
        (v.log10().floor() as i32 + 1).max(1)
    };
    let decimals = (3 - digits_before).max(0) as usize;
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };

    s
}

pub fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2}{}", UNITS[i]).replace(".00", "")
}

pub fn human_duration(secs: i64) -> String {
    let minutes = secs / 60;
    let hours = ((secs as f64) / 3600.0 + 0.5) as i64;
    if secs < 1 {
        "Less than a second".into()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if minutes == 1 {
        "About a minute".into()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", secs / 3600 / 24 / 365)
    }
}

/// "2 hours ago" for an RFC 3339 time; "N/A" when it cannot be read.
pub fn since(rfc3339: Option<&str>) -> String {
    match rfc3339.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => format!(
            "{} ago",
            human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
        ),
        None => "N/A".into(),
    }
}

/// docker's CreatedAt form: `2024-01-02 03:04:05 +0000 UTC`.
pub fn created_at(rfc3339: Option<&str>) -> String {
    match rfc3339.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => t
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S +0000 UTC")
            .to_string(),
        None => String::new(),
    }
}

pub use strata_store::units::{parse_bool, parse_bytes};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(4_261_376), "4.26MB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(binary_size(25_200_000_000), "23.47GiB");
    }

    #[test]
    fn durations_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(60), "About a minute");
        assert_eq!(human_duration(7200), "2 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(30 * 86400), "4 weeks");
    }
}
