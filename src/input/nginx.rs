//! Reads nginx access logs in the `combined` format with `$request_time` appended:
//!
//! ```text
//! log_format guardian '$remote_addr - $remote_user [$time_local] "$request" $status '
//!                     '$body_bytes_sent "$http_referer" "$http_user_agent" $request_time';
//! ```
//!
//! Routes are the request path without its query, with identifier segments replaced by `:id`
//! so that per-route counts stay few.

use std::borrow::Cow;

use chrono::NaiveDate;

use super::{quote, Event};

/// Reads one line. The error says which field was wrong, for a person to fix.
pub fn parse_line(line: &str) -> Result<Event<'_>, String> {
    let line = line.trim_end();
    let rest = match line.split_once(' ') {
        Some((addr, rest)) if !addr.is_empty() => rest,
        _ => return Err("expected $remote_addr and a space at the start of the line".to_owned()),
    };
    // What sits between the address and the bracket is "- $remote_user", and a user name is
    // client-supplied text, so skip to the bracket rather than tokenizing it.
    let rest = match rest.find('[') {
        Some(open) if open > 0 && rest.as_bytes()[open - 1] == b' ' => &rest[open + 1..],
        _ => return Err("expected [time_local] after remote user".to_owned()),
    };
    let (time, rest) = rest
        .split_once(']')
        .ok_or("expected ] to close [time_local]")?;
    let ts = parse_time(time)?;

    let rest = rest
        .strip_prefix(" \"")
        .ok_or("expected \"$request\" after [time_local]")?;
    let (request, rest) = quoted(rest).ok_or("\"$request\" has no closing quote")?;

    let rest = rest
        .strip_prefix(' ')
        .ok_or("expected $status after \"$request\"")?;
    let (status, rest) = token(rest);
    let status = parse_status(status)?;

    let rest = rest
        .strip_prefix(' ')
        .ok_or("expected $body_bytes_sent after $status")?;
    let (bytes_sent, rest) = token(rest);
    if bytes_sent.is_empty() || !bytes_sent.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "bad $body_bytes_sent {}: expected a number of bytes",
            quote(bytes_sent)
        ));
    }

    let rest = rest
        .strip_prefix(" \"")
        .ok_or("expected \"$http_referer\" after $body_bytes_sent")?;
    let (_, rest) = quoted(rest).ok_or("\"$http_referer\" has no closing quote")?;
    let rest = rest
        .strip_prefix(" \"")
        .ok_or("expected \"$http_user_agent\" after \"$http_referer\"")?;
    let (_, rest) = quoted(rest).ok_or("\"$http_user_agent\" has no closing quote")?;

    let request_time = match rest.strip_prefix(' ') {
        Some(t) if !t.is_empty() => t,
        _ => {
            return Err("missing $request_time at the end of the line \
                        (log_format must append $request_time to combined)"
                .to_owned())
        }
    };
    // A longer format would leave more fields here; reading one of them as the latency would
    // be silently wrong, so refuse instead.
    if let Some((_, extra)) = request_time.split_once(' ') {
        return Err(format!(
            "unexpected {} after $request_time (log_format must end with $request_time)",
            quote(extra)
        ));
    }
    let latency_ms = parse_request_time(request_time)?;

    Ok(Event {
        ts,
        status: Some(status),
        error: None,
        latency_ms,
        route: route_of(request),
        arm: None,
    })
}

/// Splits at the next space: the token before it, and the rest from the space on.
fn token(s: &str) -> (&str, &str) {
    s.split_at(s.find(' ').unwrap_or(s.len()))
}

/// Splits a quoted field, given the text after its opening quote, into its raw contents and
/// what follows the closing quote. nginx writes `"` inside a field as `\x22`; other writers
/// use `\"`, so a backslash always takes the next byte with it.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some((&s[..i], &s[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

fn parse_status(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n) if (100..=599).contains(&n) && s.len() == 3 => Ok(n),
        _ => Err(format!(
            "bad status {}: expected a number from 100 to 599",
            quote(s)
        )),
    }
}

/// `$request_time` is seconds with millisecond resolution, or `-` where nginx had none.
fn parse_request_time(s: &str) -> Result<Option<f64>, String> {
    if s == "-" {
        return Ok(None);
    }
    // Only digits and a point: str::parse would also take "inf", "NaN" and exponents.
    let plain =
        s.bytes().any(|b| b.is_ascii_digit()) && s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    match s.parse::<f64>() {
        Ok(secs) if plain => Ok(Some(secs * 1000.0)),
        _ => Err(format!(
            "bad $request_time {}: expected seconds such as 0.088, or \"-\"",
            quote(s)
        )),
    }
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `$time_local`, e.g. `24/Nov/2025:16:00:00 +0000`, as unix seconds. By hand because it is on
/// every line and chrono's format-string parser costs more than the rest of the line.
fn parse_time(s: &str) -> Result<f64, String> {
    let bad = |why: &str| format!("bad time {}: {why}", quote(s));
    let layout = || bad("expected dd/Mon/yyyy:HH:MM:SS +hhmm");
    let b = s.as_bytes();
    if b.len() != 26
        || [
            (2, b'/'),
            (6, b'/'),
            (11, b':'),
            (14, b':'),
            (17, b':'),
            (20, b' '),
        ]
        .iter()
        .any(|&(i, c)| b[i] != c)
    {
        return Err(layout());
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let (Some(day), Some(year), Some(hour), Some(min), Some(sec), Some(off_h), Some(off_m)) = (
        num(0, 2),
        num(7, 11),
        num(12, 14),
        num(15, 17),
        num(18, 20),
        num(22, 24),
        num(24, 26),
    ) else {
        return Err(layout());
    };
    let sign = match b[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return Err(layout()),
    };
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(&b[3..6]))
        .ok_or_else(|| bad("unknown month"))?;
    let local = NaiveDate::from_ymd_opt(year as i32, month as u32 + 1, day)
        .ok_or_else(|| bad("no such date"))?
        .and_hms_opt(hour, min, sec)
        .ok_or_else(|| bad("no such time of day"))?;
    if off_h > 23 || off_m > 59 {
        return Err(bad("bad UTC offset"));
    }
    let offset = sign * i64::from(off_h * 3600 + off_m * 60);
    let ts = local.and_utc().timestamp() - offset;
    if ts < 0 {
        return Err(bad("before 1970"));
    }
    Ok(ts as f64)
}

/// The route of a request line such as `GET /users/42?x=1 HTTP/1.1`, or `None` when the line
/// is `-` or not a request at all (nginx logs whatever a broken client sent).
fn route_of(request: &str) -> Option<Cow<'_, str>> {
    let mut parts = request.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    // HTTP/0.9 has no protocol part; anything beyond it means this is not a request line.
    match parts.next() {
        None => {}
        Some(protocol) if protocol.starts_with("HTTP/") && parts.next().is_none() => {}
        Some(_) => return None,
    }
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
    {
        return None;
    }
    // A proxy-style request names the host too: GET http://example.com/path HTTP/1.1
    let target = match target.split_once("://") {
        Some((scheme, after)) if scheme.bytes().all(|b| b.is_ascii_alphabetic()) => {
            after.find('/').map_or("/", |slash| &after[slash..])
        }
        _ => target,
    };
    let path = &target[..target.find(['?', '#']).unwrap_or(target.len())];
    if !path.starts_with('/') {
        return None;
    }
    Some(normalize_route(path))
}

/// Replaces path segments that are identifiers with `:id`: `/users/123/orders` becomes
/// `/users/:id/orders`. Borrows when there is nothing to replace.
pub fn normalize_route(path: &str) -> Cow<'_, str> {
    if !path.split('/').any(is_identifier) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if is_identifier(segment) {
            ":id"
        } else {
            segment
        });
    }
    Cow::Owned(out)
}

/// All digits, a UUID, or 8+ hex digits (hashes, object ids).
fn is_identifier(segment: &str) -> bool {
    let b = segment.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) || (b.len() >= 8 && b.iter().all(u8::is_ascii_hexdigit)) {
        return true;
    }
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = r#"203.0.113.9 - - [24/Nov/2025:16:00:00 +0000] "GET /checkout?id=3 HTTP/1.1" 500 512 "-" "curl/8.0" 0.088"#;

    /// The example line with one field swapped out.
    fn with(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from}");
        GOOD.replacen(from, to, 1)
    }

    fn err(line: &str) -> String {
        match parse_line(line) {
            Ok(e) => panic!("{line} parsed as {e:?}"),
            Err(e) => e,
        }
    }

    fn route(request: &str) -> Option<String> {
        let line = with("GET /checkout?id=3 HTTP/1.1", request);
        parse_line(&line).unwrap().route.map(Cow::into_owned)
    }

    #[test]
    fn reads_the_example_line() {
        let e = parse_line(GOOD).unwrap();
        assert_eq!(e.ts, 1764000000.0);
        assert_eq!(e.status, Some(500));
        assert_eq!(e.error, None);
        assert!((e.latency_ms.unwrap() - 88.0).abs() < 1e-9);
        assert_eq!(e.route.as_deref(), Some("/checkout"));
        assert!(
            matches!(e.route, Some(Cow::Borrowed(_))),
            "route borrows from the line"
        );
        assert_eq!(e.arm, None);
        assert!(e.is_error(500));
    }

    #[test]
    fn time_zone_offset_is_applied() {
        let ts = |offset| parse_line(&with("+0000", offset)).unwrap().ts;
        assert_eq!(ts("+0130"), 1764000000.0 - 5400.0);
        assert_eq!(ts("-0800"), 1764000000.0 + 8.0 * 3600.0);
    }

    #[test]
    fn other_addresses_users_and_trailing_space() {
        let line = GOOD.replacen("203.0.113.9 - -", "2001:db8::1 - alice smith", 1) + "  \r";
        let e = parse_line(&line).unwrap();
        assert_eq!(e.status, Some(500));
    }

    #[test]
    fn request_time_dash_means_no_latency() {
        assert_eq!(parse_line(&with(" 0.088", " -")).unwrap().latency_ms, None);
        let line = with(" 0.088", " 12");
        assert_eq!(parse_line(&line).unwrap().latency_ms, Some(12000.0));
    }

    #[test]
    fn escaped_quotes_inside_fields() {
        let line = with("\"curl/8.0\"", r#""Mozilla \"quoted\" \x22nginx\x22 \\""#);
        assert_eq!(
            parse_line(&line).unwrap().latency_ms.map(f64::round),
            Some(88.0)
        );
        let line = with("\"-\"", r#""https://a.example/?q=\"x\"""#);
        assert!(parse_line(&line).is_ok());
        assert_eq!(
            route(r#"GET /say/\"hi\" HTTP/1.1"#).as_deref(),
            Some(r#"/say/\"hi\""#)
        );
    }

    #[test]
    fn routes_are_normalized() {
        for (request, want) in [
            ("GET /users/123/orders HTTP/1.1", "/users/:id/orders"),
            ("GET /users/123/orders/ HTTP/1.1", "/users/:id/orders/"),
            (
                "POST /o/550e8400-e29b-41d4-a716-446655440000/pay HTTP/2.0",
                "/o/:id/pay",
            ),
            ("GET /blob/DEADBEEF01 HTTP/1.1", "/blob/:id"),
            (
                "GET /commit/9fceb02d0ae598e95dc970b74767f19372d61af8 HTTP/1.1",
                "/commit/:id",
            ),
            ("GET /a/1/b/2?x=1#frag HTTP/1.1", "/a/:id/b/:id"),
            ("GET /v1/cafe/abc1234 HTTP/1.1", "/v1/cafe/abc1234"),
            ("GET / HTTP/1.1", "/"),
            ("GET //x HTTP/1.1", "//x"),
            ("GET /search?q=/users/1 HTTP/1.1", "/search"),
            (
                "GET http://example.com:8080/users/7?x HTTP/1.1",
                "/users/:id",
            ),
            ("GET https://example.com HTTP/1.1", "/"),
            ("GET /old-style", "/old-style"),
            ("PROPFIND /dav/42 HTTP/1.1", "/dav/:id"),
        ] {
            assert_eq!(route(request).as_deref(), Some(want), "{request}");
        }
    }

    #[test]
    fn bad_requests_have_no_route() {
        for request in [
            "-",
            "",
            "GET",
            r"\x16\x03\x01\x00\xA5\x01\x00\x00\xA1\x03\x03",
            "CONNECT example.com:443 HTTP/1.1",
            "OPTIONS * HTTP/1.1",
            "get /x HTTP/1.1",
            "GET /x HTTP/1.1 extra",
            "GET /x junk",
            "GET  /x HTTP/1.1",
        ] {
            let line = with("GET /checkout?id=3 HTTP/1.1", request);
            let e = parse_line(&line).unwrap_or_else(|m| panic!("{request}: {m}"));
            assert_eq!(e.route, None, "{request}");
            assert_eq!(e.status, Some(500));
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(String, &str)] = &[
            ("".to_owned(), "$remote_addr"),
            (" - - [24/Nov/2025:16:00:00 +0000]".to_owned(), "$remote_addr"),
            (with("[24/Nov/2025:16:00:00 +0000]", "24/Nov/2025:16:00:00 +0000"), "expected [time_local] after remote user"),
            (with("- [", "-["), "expected [time_local] after remote user"),
            (GOOD[..40].to_owned(), "expected ] to close [time_local]"),
            (with("24/Nov/2025:16:00:00", "2025-11-24T16:00:00"), "bad time \"2025-11-24T16:00:00 +0000\": expected"),
            (with("Nov", "Nox"), "bad time \"24/Nox/2025:16:00:00 +0000\": unknown month"),
            (with("24/Nov", "31/Nov"), "bad time \"31/Nov/2025:16:00:00 +0000\": no such date"),
            (with("16:00:00", "24:00:00"), "no such time of day"),
            (with("+0000", "+0099"), "bad UTC offset"),
            (with("+0000", "~0000"), "bad time"),
            (with("2025:", "1969:"), "before 1970"),
            (with("] \"", "]\""), "expected \"$request\" after [time_local]"),
            (GOOD[..70].to_owned(), "\"$request\" has no closing quote"),
            (with(" 500 ", " 900 "), "bad status \"900\""),
            (with(" 500 ", " 5xx "), "bad status \"5xx\""),
            (with(" 500 ", " 0500 "), "bad status \"0500\""),
            (with(" 512 ", " - "), "bad $body_bytes_sent \"-\""),
            (with("512 \"-\"", "512 -"), "expected \"$http_referer\""),
            (with("\"-\" \"curl", "\"-\"\"curl"), "expected \"$http_user_agent\""),
            (with("\"curl/8.0\" 0.088", "\"curl/8.0 0.088"), "\"$http_user_agent\" has no closing quote"),
            (with(" 0.088", ""), "missing $request_time at the end of the line (log_format must append $request_time to combined)"),
            (with(" 0.088", " "), "missing $request_time"),
            (with(" 0.088", " 0.088 0.087"), "unexpected \"0.087\" after $request_time"),
            (with("0.088", "fast"), "bad $request_time \"fast\""),
            (with("0.088", "inf"), "bad $request_time"),
            (with("0.088", "-0.1"), "bad $request_time"),
            (with("0.088", "."), "bad $request_time"),
        ];
        for (line, want) in cases {
            let got = err(line);
            assert!(got.contains(want), "{line}\n  got:  {got}\n  want: {want}");
        }
    }

    #[test]
    fn long_garbage_is_quoted_briefly() {
        let line = with(" 500 ", &format!(" {} ", "9".repeat(500)));
        assert!(err(&line).len() < 120);
    }

    #[test]
    fn normalize_route_borrows_when_unchanged() {
        assert!(matches!(normalize_route("/a/b/c"), Cow::Borrowed("/a/b/c")));
        assert_eq!(normalize_route("/1/2/3"), "/:id/:id/:id");
        assert_eq!(normalize_route("/1234567"), "/:id");
        assert_eq!(
            normalize_route("/abcdef1"),
            "/abcdef1",
            "hex needs 8 digits"
        );
        assert_eq!(normalize_route("/abcdef12"), "/:id");
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(s in "(?s).*") {
            let _ = parse_line(&s);
        }

        #[test]
        fn never_panics_on_near_misses(
            a in 0usize..130, b in 0usize..130, insert in r#"(?s)[\[\]" \\/:+\-0-9a-zé]{0,6}"#,
        ) {
            let (a, b) = (a.min(GOOD.len()), b.min(GOOD.len()));
            let (a, b) = (a.min(b), a.max(b));
            let line = format!("{}{}{}", &GOOD[..a], insert, &GOOD[b..]);
            let _ = parse_line(&line);
        }

        #[test]
        fn normalizing_twice_changes_nothing(path in "/[a-f0-9/:-]{0,40}") {
            let once = normalize_route(&path).into_owned();
            prop_assert_eq!(normalize_route(&once), once.as_str());
        }
    }
}
