//! Numbers and units as a person reads them: rates, ratios, e-values, latencies, counts,
//! durations and times. Every view (replay's summary, `guardian status`, the alert email, the
//! digest, the post-mortem) formats through here, so the same evidence reads the same
//! everywhere.
//!
//! Where two views used to print the same evidence differently (replay's summary and the
//! email had a formatter each), the better of the two was kept for each unit: see each
//! function for why.

/// A rate (0.0123) as a percentage, "1.23%"; no rate is "-". Two decimals, or two
/// significant digits below 0.1% so that a small rate never reads as zero ("0.050%",
/// "0.0012%"); zero is "0%", not a precision the count does not have.
pub fn percent(rate: Option<f64>) -> String {
    let Some(r) = rate else {
        return "-".to_owned();
    };
    let p = r * 100.0;
    if p == 0.0 {
        "0%".to_owned()
    } else if !p.is_finite() || p.abs() >= 0.1 {
        format!("{p:.2}%")
    } else {
        // Two significant digits: 0.0123 has its first at the second decimal.
        let first = (-p.abs().log10()).ceil() as usize;
        format!("{p:.*}%", (first + 1).clamp(3, 12))
    }
}

/// A ratio of rates or latencies, "1.10x", "12.4x", "153x": three significant digits at most
/// (the evidence holds no more), and "unbounded" for an infinite one rather than "infx".
pub fn ratio(r: f64) -> String {
    if r.is_infinite() && r > 0.0 {
        "unbounded".to_owned()
    } else if r >= 100.0 {
        format!("{r:.0}x")
    } else if r >= 10.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.2}x")
    }
}

/// An e-value or its threshold: "0.004" (an e-value under 1 is not rounded to zero), "3.55",
/// "167", and scientific from 10,000 on ("2.6e4"), where the digits stop mattering.
pub fn evalue(e: f64) -> String {
    if !e.is_finite() {
        e.to_string()
    } else if e >= 1e4 {
        format!("{e:.1e}")
    } else if e >= 100.0 {
        format!("{e:.0}")
    } else if e >= 1.0 {
        format!("{e:.2}")
    } else {
        format!("{e:.3}")
    }
}

/// A latency with its unit, "80.1 ms"; none is "-".
pub fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) => format!("{} ms", ms_number(v)),
    }
}

/// A latency in milliseconds without the unit, to three significant digits ("2.35", "80.1",
/// "388", "1250"): latencies are counted in buckets 2.5% wide, so a fourth digit would be
/// noise, and a fast service's 2.35 ms must not read as 2.4.
pub fn ms_number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A count with thousands separators, "12,000".
pub fn count(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency quantile's name, "p50", "p99.9", "p99.95".
pub fn quantile(q: f64) -> String {
    let text = format!("{:.3}", q * 100.0);
    format!("p{}", text.trim_end_matches('0').trim_end_matches('.'))
}

/// A number to one decimal, without a trailing ".0".
pub fn trim(v: f64) -> String {
    let text = format!("{v:.1}");
    text.strip_suffix(".0").map(str::to_owned).unwrap_or(text)
}

/// A duration in seconds, "30.6 s", with minutes and seconds alongside when there are many:
/// "150 s (2 min 30 s)", which reads more easily than "2.5 min".
pub fn duration(d: f64) -> String {
    if !d.is_finite() {
        return format!("{d} s");
    }
    if d < 0.0 {
        return format!("-{}", duration(-d));
    }
    let s = d.round() as u64;
    if s < 120 {
        format!("{} s", trim((d * 10.0).round() / 10.0))
    } else {
        format!("{s} s ({} min {} s)", s / 60, s % 60)
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
    fn rates_keep_two_significant_digits_when_small() {
        assert_eq!(percent(None), "-");
        assert_eq!(percent(Some(0.0)), "0%");
        assert_eq!(percent(Some(0.0123)), "1.23%");
        assert_eq!(percent(Some(0.001)), "0.10%");
        assert_eq!(percent(Some(0.0005)), "0.050%");
        assert_eq!(percent(Some(0.000_123)), "0.012%");
        assert_eq!(percent(Some(0.000_012_3)), "0.0012%");
        assert_eq!(percent(Some(1.0)), "100.00%");
    }

    #[test]
    fn ratios_e_values_and_latencies_keep_the_digits_that_matter() {
        assert_eq!(ratio(1.1), "1.10x");
        assert_eq!(ratio(12.44), "12.4x");
        assert_eq!(ratio(153.4), "153x");
        assert_eq!(ratio(f64::INFINITY), "unbounded");
        assert_eq!(evalue(0.0041), "0.004");
        assert_eq!(evalue(3.5456), "3.55");
        assert_eq!(evalue(166.666), "167");
        assert_eq!(evalue(25_849.4), "2.6e4");
        assert_eq!(evalue(f64::INFINITY), "inf");
        assert_eq!(ms(Some(2.345)), "2.35 ms");
        assert_eq!(ms(Some(80.14)), "80.1 ms");
        assert_eq!(ms(Some(387.6)), "388 ms");
        assert_eq!(ms(None), "-");
        assert_eq!(quantile(0.5), "p50");
        assert_eq!(quantile(0.999), "p99.9");
        assert_eq!(quantile(0.9995), "p99.95");
    }

    #[test]
    fn durations_show_minutes_when_there_are_many() {
        assert_eq!(duration(10.0), "10 s");
        assert_eq!(duration(30.64), "30.6 s");
        assert_eq!(duration(150.0), "150 s (2 min 30 s)");
        assert_eq!(duration(1800.0), "1800 s (30 min 0 s)");
        assert_eq!(duration(-5.0), "-5 s");
    }

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(12_000), "12,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }
}
