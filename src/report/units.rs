//! Numbers and units as a person reads them: rates, ratios, e-values, latencies, counts,
//! durations and times. Every view (replay's summary, `guardian status`, the alert email, the
//! digest, the post-mortem) formats through here, so the same evidence reads the same
//! everywhere.

/// A rate (0.0123) as a percentage, "1.23%"; no rate is "-".
pub fn percent(rate: Option<f64>) -> String {
    match rate {
        None => "-".to_owned(),
        Some(r) if r > 0.0 && r < 0.0001 => format!("{:.4}%", r * 100.0),
        Some(r) => format!("{:.2}%", r * 100.0),
    }
}

/// A ratio of rates or latencies, "1.10x".
pub fn ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}x")
    } else if r >= 10.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.2}x")
    }
}

/// An e-value or its threshold: plain when it reads well, scientific when huge.
pub fn evalue(v: f64) -> String {
    if !v.is_finite() {
        v.to_string()
    } else if v >= 1e6 {
        format!("{v:.2e}")
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A latency with its unit, "80.1 ms"; none is "-".
pub fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v >= 100.0 => format!("{v:.0} ms"),
        Some(v) => format!("{v:.1} ms"),
    }
}

/// A count with thousands separators, "12,000".
pub fn count(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency quantile's name, "p50", "p99.9".
pub fn quantile(q: f64) -> String {
    format!("p{}", trim(q * 100.0))
}

/// A number to one decimal, without a trailing ".0".
pub fn trim(v: f64) -> String {
    let text = format!("{v:.1}");
    text.strip_suffix(".0").map(str::to_owned).unwrap_or(text)
}

/// A duration in seconds, "30.6 s", with minutes alongside when there are many.
pub fn duration(d: f64) -> String {
    if !d.is_finite() {
        format!("{d} s")
    } else if d < 120.0 {
        format!("{} s", trim((d * 10.0).round() / 10.0))
    } else {
        format!("{:.0} s ({:.1} min)", d, d / 60.0)
    }
}

/// A signed offset from a moment: "+3.1 s", "+2 min 05 s", "−10 min 00 s", "+1 h 02 min".
pub fn offset(d: f64) -> String {
    if !d.is_finite() {
        return format!("{d} s");
    }
    let sign = if d < 0.0 { "\u{2212}" } else { "+" };
    let a = d.abs();
    if a < 60.0 {
        format!("{sign}{} s", trim((a * 10.0).round() / 10.0))
    } else if a < 3600.0 {
        let s = a.round() as u64;
        format!("{sign}{} min {:02} s", s / 60, s % 60)
    } else {
        let m = (a / 60.0).round() as u64;
        format!("{sign}{} h {:02} min", m / 60, m % 60)
    }
}

/// Unix seconds as a UTC date, with the seconds themselves for grepping logs.
pub fn when(t: f64) -> String {
    let whole = t.floor();
    match chrono::DateTime::from_timestamp(whole as i64, 0) {
        Some(d) if t.is_finite() => {
            format!("{} UTC (unix {whole:.0})", d.format("%Y-%m-%d %H:%M:%S"))
        }
        _ => format!("unix {t}"),
    }
}

/// Unix seconds as a UTC time to the millisecond (an f64 of unix seconds holds no finer, and
/// prints noise below it).
pub fn utc(ts: f64) -> String {
    match chrono::DateTime::from_timestamp_millis((ts * 1000.0).round() as i64) {
        Some(t) => t.to_string(),
        None => format!("{ts} (unix seconds)"),
    }
}

/// The time of day of `at`, "03:15:45", or its whole date when it is not on `day_of`'s day.
pub fn clock(at: f64, day_of: f64) -> String {
    let day = |x: f64| (x / 86_400.0).floor();
    match chrono::DateTime::from_timestamp(at.floor() as i64, 0) {
        Some(d) if at.is_finite() && day(at) == day(day_of) => d.format("%H:%M:%S").to_string(),
        Some(d) if at.is_finite() => d.format("%Y-%m-%d %H:%M:%S").to_string(),
        _ => format!("unix {at}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_764_000_000.0;

    #[test]
    fn offsets_read_naturally() {
        assert_eq!(offset(0.0), "+0 s");
        assert_eq!(offset(30.6), "+30.6 s");
        assert_eq!(offset(158.6), "+2 min 39 s");
        assert_eq!(offset(-600.0), "\u{2212}10 min 00 s");
        assert_eq!(offset(3_725.0), "+1 h 02 min");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(when(T0 + 0.9), "2025-11-24 16:00:00 UTC (unix 1764000000)");
        assert_eq!(utc(T0 + 47.0), "2025-11-24 16:00:47 UTC");
        assert_eq!(utc(T0 + 0.95), "2025-11-24 16:00:00.950 UTC");
        assert_eq!(clock(T0 + 30.0, T0), "16:00:30");
        assert_eq!(clock(T0 + 86_400.0, T0), "2025-11-25 16:00:00");
    }

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(12_000), "12,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }
}
