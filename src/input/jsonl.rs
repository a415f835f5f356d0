//! Reads one request per line of JSON, e.g.
//! `{"ts": 1764000000.125, "status": 500, "latency_ms": 87.5, "route": "/checkout"}`.
//!
//! Fields: `ts` (unix seconds, or an RFC 3339 string) is required; so is one of `status`
//! (100..=599) or `error` (bool). `latency_ms`, `route` and `arm` are optional, `null` is the
//! same as absent, and any other field is ignored.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{quote, Event};
use crate::core::Arm;

/// Reads one line. The error says which field was wrong and how, for a person to fix.
pub fn parse_line(line: &str) -> Result<Event<'_>, String> {
    let raw: Raw<'_> = serde_json::from_str(line).map_err(|e| {
        // serde says "at line 1 column N", but every line here is line 1 and the caller
        // prefixes the real line number.
        let shown = e.to_string();
        let message = shown.rsplit_once(" at line ").map_or(&*shown, |(m, _)| m);
        if e.line() == 0 {
            format!("not a JSON object: {message}")
        } else {
            format!("not a JSON object: {message} at column {}", e.column())
        }
    })?;
    if let Some(field) = raw.duplicate {
        return Err(format!("\"{field}\" appears more than once"));
    }

    let ts = match raw.ts {
        None => return Err("missing \"ts\"".to_owned()),
        Some(v) => parse_ts(v)?,
    };
    let status = match raw.status {
        None => None,
        Some(Scalar::U(n)) if (100..=599).contains(&n) => Some(n as u16),
        Some(v) => {
            return Err(format!(
                "\"status\" must be an integer from 100 to 599, got {v}"
            ))
        }
    };
    let error = match raw.error {
        None => None,
        Some(Scalar::Bool(b)) => Some(b),
        Some(v) => return Err(format!("\"error\" must be true or false, got {v}")),
    };
    if status.is_none() && error.is_none() {
        return Err(
            "missing \"status\" or \"error\": one is needed to tell whether the request failed"
                .to_owned(),
        );
    }
    let latency_ms = match raw.latency_ms {
        None => None,
        Some(v) => match v.as_f64() {
            Some(ms) if ms >= 0.0 && ms.is_finite() => Some(ms),
            _ => {
                return Err(format!(
                    "\"latency_ms\" must be a non-negative number, got {v}"
                ))
            }
        },
    };
    let route = match raw.route {
        None => None,
        Some(Scalar::Str(s)) => Some(s),
        Some(v) => return Err(format!("\"route\" must be a string, got {v}")),
    };
    let arm = match raw.arm {
        None => None,
        Some(v) => {
            let arm = if let Scalar::Str(s) = &v {
                Arm::parse(s)
            } else {
                None
            };
            Some(arm.ok_or_else(|| {
                format!(
                    "\"arm\" must be one of control, baseline, stable, old, primary, \
                     treatment, canary, new, candidate; got {v}"
                )
            })?)
        }
    };
    Ok(Event {
        ts,
        status,
        error,
        latency_ms,
        route,
        arm,
    })
}

/// Past this a number is far likelier to be milliseconds than a date in the year 5138.
const MAX_TS_SECONDS: f64 = 1e11;

fn parse_ts(v: Scalar<'_>) -> Result<f64, String> {
    if let Scalar::Str(s) = &v {
        let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|e| {
            format!("\"ts\" must be unix seconds or an RFC 3339 time, got {v}: {e}")
        })?;
        let secs = t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9;
        if secs < 0.0 {
            return Err(format!("\"ts\" is before 1970: {v}"));
        }
        return Ok(secs);
    }
    match v.as_f64() {
        Some(secs) if secs > MAX_TS_SECONDS => Err(format!(
            "\"ts\" must be unix seconds, got {v}, which looks like milliseconds or finer"
        )),
        Some(secs) if secs >= 0.0 && secs.is_finite() => Ok(secs),
        Some(_) => Err(format!("\"ts\" must be non-negative unix seconds, got {v}")),
        None => Err(format!(
            "\"ts\" must be unix seconds or an RFC 3339 time, got {v}"
        )),
    }
}

/// The fields we read, each taken as whatever JSON value it holds so that a wrong type gets
/// our message rather than serde's.
#[derive(Default)]
struct Raw<'a> {
    ts: Option<Scalar<'a>>,
    status: Option<Scalar<'a>>,
    error: Option<Scalar<'a>>,
    latency_ms: Option<Scalar<'a>>,
    route: Option<Scalar<'a>>,
    arm: Option<Scalar<'a>>,
    /// JSON allows a key twice and parsers disagree on which wins; we refuse to guess.
    duplicate: Option<&'static str>,
}

#[derive(Clone, Copy, serde::Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Key {
    Ts,
    Status,
    Error,
    LatencyMs,
    Route,
    Arm,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // By hand rather than derived: a derived struct would also accept a JSON array.
        struct RawVisitor;

        impl<'de> Visitor<'de> for RawVisitor {
            type Value = Raw<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
                let mut raw = Raw::default();
                let mut seen = 0u8;
                while let Some(key) = map.next_key::<Key>()? {
                    let (slot, name) = match key {
                        Key::Ts => (&mut raw.ts, "ts"),
                        Key::Status => (&mut raw.status, "status"),
                        Key::Error => (&mut raw.error, "error"),
                        Key::LatencyMs => (&mut raw.latency_ms, "latency_ms"),
                        Key::Route => (&mut raw.route, "route"),
                        Key::Arm => (&mut raw.arm, "arm"),
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    let bit = 1u8 << key as u8;
                    if seen & bit != 0 {
                        raw.duplicate.get_or_insert(name);
                    }
                    seen |= bit;
                    *slot = match map.next_value::<Scalar<'de>>()? {
                        Scalar::Null => None,
                        value => Some(value),
                    };
                }
                Ok(raw)
            }
        }

        deserializer.deserialize_map(RawVisitor)
    }
}

/// Any JSON value, keeping only what our messages and checks need. Strings borrow from the
/// line unless they contain escapes.
enum Scalar<'a> {
    Null,
    Bool(bool),
    U(u64),
    I(i64),
    F(f64),
    Str(Cow<'a, str>),
    /// An object or array, which no field of ours takes.
    Other(&'static str),
}

impl Scalar<'_> {
    fn as_f64(&self) -> Option<f64> {
        match *self {
            Scalar::U(n) => Some(n as f64),
            Scalar::I(n) => Some(n as f64),
            Scalar::F(x) => Some(x),
            _ => None,
        }
    }
}

/// As a value appears in an error message.
impl fmt::Display for Scalar<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Null => f.write_str("null"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::U(n) => write!(f, "{n}"),
            Scalar::I(n) => write!(f, "{n}"),
            Scalar::F(x) => write!(f, "{x}"),
            Scalar::Str(s) => f.write_str(&quote(s)),
            Scalar::Other(what) => f.write_str(what),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar<'de>, D::Error> {
                Scalar::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::U(n))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::I(n))
            }
            fn visit_f64<E>(self, x: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::F(x))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(s)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("an object"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("an array"))
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(line: &str) -> Event<'_> {
        parse_line(line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn err(line: &str) -> String {
        match parse_line(line) {
            Ok(e) => panic!("{line} parsed as {e:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn reads_a_full_line() {
        let e = ok(
            r#"{"ts": 1764000000.125, "status": 500, "latency_ms": 87.5, "route": "/checkout", "arm": "Canary"}"#,
        );
        assert_eq!(e.ts, 1764000000.125);
        assert_eq!(e.status, Some(500));
        assert_eq!(e.error, None);
        assert_eq!(e.latency_ms, Some(87.5));
        assert_eq!(e.route.as_deref(), Some("/checkout"));
        assert!(
            matches!(e.route, Some(Cow::Borrowed(_))),
            "route borrows from the line"
        );
        assert_eq!(e.arm, Some(Arm::Treatment));
        assert!(e.is_error(500));
    }

    #[test]
    fn reads_a_minimal_line() {
        let e = ok(r#"{"ts": 1764000000, "error": false}"#);
        assert_eq!(e.ts, 1764000000.0);
        assert_eq!((e.status, e.error), (None, Some(false)));
        assert_eq!((e.latency_ms, e.route, e.arm), (None, None, None));
    }

    #[test]
    fn nulls_and_unknown_fields_are_ignored() {
        let e = ok(
            r#"{"host": {"a": [1, 2]}, "ts": 5, "status": 200, "latency_ms": null, "route": null, "arm": null, "tags": ["x"]}"#,
        );
        assert_eq!(e.status, Some(200));
        assert_eq!((e.latency_ms, e.route, e.arm), (None, None, None));
    }

    #[test]
    fn escaped_route_is_unescaped() {
        let e = ok(r#"{"ts": 1, "status": 200, "route": "/a\"b\u00e9"}"#);
        assert_eq!(e.route.as_deref(), Some("/a\"bé"));
    }

    #[test]
    fn ts_accepts_rfc3339() {
        let e = ok(r#"{"ts": "2025-11-24T16:00:00.5+01:00", "status": 200}"#);
        assert_eq!(e.ts, 1764000000.5 - 3600.0);
        let e = ok(r#"{"ts": "2025-11-24T16:00:00Z", "status": 200}"#);
        assert_eq!(e.ts, 1764000000.0);
    }

    #[test]
    fn bad_ts() {
        assert_eq!(err(r#"{"status": 200}"#), "missing \"ts\"");
        assert_eq!(err(r#"{"ts": null, "status": 200}"#), "missing \"ts\"");
        for line in [
            r#"{"ts": -1, "status": 200}"#,
            r#"{"ts": -0.5, "status": 200}"#,
            r#"{"ts": true, "status": 200}"#,
            r#"{"ts": "yesterday", "status": 200}"#,
            r#"{"ts": "1969-12-31T00:00:00Z", "status": 200}"#,
            r#"{"ts": [1], "status": 200}"#,
        ] {
            assert!(err(line).starts_with("\"ts\""), "{line}: {}", err(line));
        }
        let m = err(r#"{"ts": 1764000000125, "status": 200}"#);
        assert!(m.contains("milliseconds"), "{m}");
        let m = err(r#"{"ts": "yesterday", "status": 200}"#);
        assert!(m.contains("RFC 3339") && m.contains("\"yesterday\""), "{m}");
    }

    #[test]
    fn bad_status() {
        assert_eq!(
            err(r#"{"ts": 1, "status": 900}"#),
            "\"status\" must be an integer from 100 to 599, got 900"
        );
        assert_eq!(
            err(r#"{"ts": 1, "status": "500"}"#),
            "\"status\" must be an integer from 100 to 599, got \"500\""
        );
        for s in ["99", "-200", "200.5", "200.0", "false"] {
            let line = format!(r#"{{"ts": 1, "status": {s}}}"#);
            assert!(err(&line).starts_with("\"status\" must be"), "{line}");
        }
    }

    #[test]
    fn missing_outcome() {
        let m = err(r#"{"ts": 1, "latency_ms": 3}"#);
        assert!(m.contains("missing \"status\" or \"error\""), "{m}");
    }

    #[test]
    fn bad_error_flag() {
        assert_eq!(
            err(r#"{"ts": 1, "error": "yes"}"#),
            "\"error\" must be true or false, got \"yes\""
        );
    }

    #[test]
    fn bad_latency() {
        for v in ["-1", "\"fast\"", "true", "{}"] {
            let line = format!(r#"{{"ts": 1, "status": 200, "latency_ms": {v}}}"#);
            let m = err(&line);
            assert!(
                m.starts_with("\"latency_ms\" must be a non-negative number"),
                "{m}"
            );
        }
    }

    #[test]
    fn bad_route() {
        let m = err(r#"{"ts": 1, "status": 200, "route": 7}"#);
        assert_eq!(m, "\"route\" must be a string, got 7");
    }

    #[test]
    fn bad_arm() {
        assert_eq!(
            err(r#"{"ts": 1, "status": 200, "arm": "blue"}"#),
            "\"arm\" must be one of control, baseline, stable, old, primary, treatment, \
             canary, new, candidate; got \"blue\""
        );
        assert!(err(r#"{"ts": 1, "status": 200, "arm": 1}"#).starts_with("\"arm\""));
    }

    #[test]
    fn duplicate_field() {
        let m = err(r#"{"ts": 1, "status": 200, "status": 500}"#);
        assert_eq!(m, "\"status\" appears more than once");
        let m = err(r#"{"ts": null, "status": 200, "ts": 1}"#);
        assert_eq!(m, "\"ts\" appears more than once");
    }

    #[test]
    fn not_an_object() {
        for line in [
            "[1, 200]",
            "42",
            "\"ts\"",
            "ts=1 status=200",
            r#"{"ts": 1, "status": 200"#,
            r#"{"ts": 1, "status": 200} trailing"#,
            r#"{"ts": 1,, "status": 200}"#,
        ] {
            let m = err(line);
            assert!(m.starts_with("not a JSON object: "), "{line}: {m}");
            assert!(!m.contains("line 1"), "{line}: {m}");
        }
        let m = err("[1, 200]");
        assert!(m.contains("expected an object"), "{m}");
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(s in "(?s).*") {
            let _ = parse_line(&s);
        }

        #[test]
        fn never_panics_on_near_misses(
            a in 0usize..200, b in 0usize..200, insert in "(?s).{0,6}",
        ) {
            let good = r#"{"ts": "2025-11-24T16:00:00Z", "status": 503, "latency_ms": 1.5, "route": "/x", "arm": "new", "error": true}"#;
            let (a, b) = (a.min(good.len()), b.min(good.len()));
            let (a, b) = (a.min(b), a.max(b));
            let line = format!("{}{}{}", &good[..a], insert, &good[b..]);
            let _ = parse_line(&line);
        }

        #[test]
        fn numbers_in_range_are_read_back(ts in 0.0f64..1e10, status in 100u16..600, ms in 0.0f64..1e6) {
            let line = format!(r#"{{"ts": {ts}, "status": {status}, "latency_ms": {ms}}}"#);
            let e = parse_line(&line).unwrap();
            // serde_json without its float_roundtrip feature may be one ulp off.
            let close = |a: f64, b: f64| (a - b).abs() <= 4.0 * f64::EPSILON * b.abs();
            prop_assert!(close(e.ts, ts), "{} vs {}", e.ts, ts);
            prop_assert_eq!(e.status, Some(status));
            prop_assert!(close(e.latency_ms.unwrap(), ms), "{:?} vs {}", e.latency_ms, ms);
        }
    }
}
