//! Readers for recorded traffic: JSON lines and nginx access logs.

pub mod jsonl;
pub mod nginx;

use std::borrow::Cow;
use std::io::{BufRead, Read};
use std::ops::ControlFlow;
use std::str::FromStr;

use crate::core::{Arm, Request};

/// One request as read from a log line. Borrows from the line where it can.
#[derive(Clone, Debug, PartialEq)]
pub struct Event<'a> {
    /// Unix seconds.
    pub ts: f64,
    pub status: Option<u16>,
    /// Set when the log says outright whether the request failed; wins over `status`.
    pub error: Option<bool>,
    pub latency_ms: Option<f64>,
    pub route: Option<Cow<'a, str>>,
    pub arm: Option<Arm>,
}

impl Event<'_> {
    /// True when the request failed: `error` if given, else `status >= error_status_min`.
    /// An event with neither counts as a success.
    pub fn is_error(&self, error_status_min: u16) -> bool {
        match self.error {
            Some(error) => error,
            None => self.status.is_some_and(|s| s >= error_status_min),
        }
    }

    /// The request as the core takes it.
    pub fn request(&self, error_status_min: u16) -> Request<'_> {
        Request {
            ts: self.ts,
            error: self.is_error(error_status_min),
            latency_ms: self.latency_ms,
            route: self.route.as_deref(),
            arm: self.arm,
        }
    }
}

/// A line that could not be read: which line, and what was wrong with it, in words a user can act on.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    /// 1-based.
    pub line: u64,
    pub message: String,
}

/// The layout of a traffic log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line; see [`jsonl`].
    JsonLines,
    /// nginx `combined` with `$request_time` appended; see [`nginx`].
    Nginx,
}

/// A format name that is not one of ours.
#[derive(Debug, thiserror::Error)]
#[error("unknown log format {0:?}: expected \"jsonl\" or \"nginx\"")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        match s.to_ascii_lowercase().as_str() {
            "jsonl" | "json" | "jsonlines" => Ok(Format::JsonLines),
            "nginx" => Ok(Format::Nginx),
            _ => Err(UnknownFormat(s.to_owned())),
        }
    }
}

/// Longest line we will buffer. Real log lines are a few KiB at most; past this the input is
/// almost surely not a log (a binary file, or one with no newlines), and buffering it whole
/// would break the promise of flat memory.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Streams events from a reader, one line at a time, reusing one buffer so memory stays flat
/// however long the file is. Blank lines are skipped. Calls `f` for each event, which may
/// return `Break` to stop early.
///
/// Stops at the first bad line and returns its [`LineError`]; IO errors, lines that are not
/// UTF-8 and lines longer than [`MAX_LINE_BYTES`] are reported the same way.
///
/// Returns the number of lines read, blank ones included; after a `Break` that count ends
/// with the line `f` stopped on.
pub fn for_each_event<R: BufRead>(
    mut reader: R,
    format: Format,
    mut f: impl FnMut(u64, &Event<'_>) -> ControlFlow<()>,
) -> Result<u64, LineError> {
    // Bytes rather than a String so a line that is too long or not UTF-8 gets its own message
    // instead of whatever read_line would make of it.
    let mut buf = Vec::with_capacity(512);
    let mut line = 0u64;
    loop {
        buf.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| LineError {
                line: line + 1,
                message: e.to_string(),
            })?;
        if read == 0 {
            return Ok(line);
        }
        line += 1;
        let bytes = match buf.strip_suffix(b"\n") {
            Some(b) => b.strip_suffix(b"\r").unwrap_or(b),
            None if buf.len() > MAX_LINE_BYTES => {
                return Err(LineError {
                    line,
                    message: format!(
                        "longer than {} KiB; is this a text log with one request per line?",
                        MAX_LINE_BYTES / 1024
                    ),
                })
            }
            None => &buf,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| LineError {
            line,
            message: format!(
                "not valid UTF-8 (at byte {}); is this a text log?",
                e.valid_up_to() + 1
            ),
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let event = parse_line(text, format).map_err(|message| LineError { line, message })?;
        if f(line, &event).is_break() {
            return Ok(line);
        }
    }
}

/// Reads one line in `format`. A line that fails but reads in the other format says so, since
/// a wrong `--format` (or `format =`) is the likeliest mistake.
pub fn parse_line(text: &str, format: Format) -> Result<Event<'_>, String> {
    // Editors on some systems start a file with a byte-order mark; it is not data.
    let text = text.trim_start_matches('\u{feff}');
    match format {
        Format::JsonLines => jsonl::parse_line(text).map_err(|message| {
            if nginx::parse_line(text).is_ok() {
                format!("{message} (this looks like an nginx access log: use --format nginx)")
            } else {
                message
            }
        }),
        Format::Nginx => nginx::parse_line(text).map_err(|message| {
            if text.trim_start().starts_with('{') {
                format!("{message} (this looks like JSON lines: use --format jsonl)")
            } else {
                message
            }
        }),
    }
}

/// A piece of the input quoted for an error message, cut short so one garbage line cannot
/// flood the terminal.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 60;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}…", &s[..end])
}

#[cfg(test)]
mod format_hints {
    use super::*;

    fn first_error(text: &str, format: Format) -> String {
        for_each_event(text.as_bytes(), format, |_, _| ControlFlow::Continue(()))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_wrong_format_is_named() {
        let nginx = "203.0.113.9 - - [24/Nov/2025:16:00:00 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"curl\" 0.010\n";
        assert!(first_error(nginx, Format::JsonLines).contains("use --format nginx"));
        let json = "{\"ts\": 1764000000, \"status\": 200}\n";
        assert!(first_error(json, Format::Nginx).contains("use --format jsonl"));
    }

    #[test]
    fn a_byte_order_mark_is_not_data() {
        let text = "\u{feff}{\"ts\": 1764000000, \"status\": 200}\n";
        let mut n = 0;
        for_each_event(text.as_bytes(), Format::JsonLines, |_, _| {
            n += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(n, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor};

    fn collect(input: &str, format: Format) -> (Result<u64, LineError>, Vec<f64>) {
        let mut seen = Vec::new();
        let result = for_each_event(Cursor::new(input), format, |_, e| {
            seen.push(e.ts);
            ControlFlow::Continue(())
        });
        (result, seen)
    }

    #[test]
    fn format_names() {
        for name in ["jsonl", "json", "JSONLines"] {
            assert_eq!(name.parse::<Format>().unwrap(), Format::JsonLines);
        }
        assert_eq!("nginx".parse::<Format>().unwrap(), Format::Nginx);
        let err = "csv".parse::<Format>().unwrap_err().to_string();
        assert!(
            err.contains("\"csv\"") && err.contains("jsonl") && err.contains("nginx"),
            "{err}"
        );
    }

    #[test]
    fn is_error_prefers_the_explicit_flag() {
        let mut e = Event {
            ts: 0.0,
            status: Some(500),
            error: None,
            latency_ms: None,
            route: None,
            arm: None,
        };
        assert!(e.is_error(500));
        assert!(!e.is_error(501));
        e.error = Some(false);
        assert!(!e.is_error(500));
        e.status = None;
        e.error = None;
        assert!(!e.is_error(500));
    }

    #[test]
    fn skips_blank_lines_and_counts_them() {
        let input = "\n{\"ts\": 1, \"status\": 200}\n   \r\n{\"ts\": 2, \"error\": true}\r\n\n";
        let (result, seen) = collect(input, Format::JsonLines);
        assert_eq!(result.unwrap(), 5);
        assert_eq!(seen, [1.0, 2.0]);
    }

    #[test]
    fn last_line_without_newline_is_read() {
        let (result, seen) = collect("{\"ts\": 1, \"status\": 200}", Format::JsonLines);
        assert_eq!(result.unwrap(), 1);
        assert_eq!(seen, [1.0]);
    }

    #[test]
    fn bad_line_error_names_its_line_number() {
        let input = "{\"ts\": 1, \"status\": 200}\n\n{\"ts\": 2, \"status\": 900}\n{\"ts\": 3, \"status\": 200}\n";
        let (result, seen) = collect(input, Format::JsonLines);
        let err = result.unwrap_err();
        assert_eq!(err.line, 3);
        let shown = err.to_string();
        assert!(shown.starts_with("line 3: "), "{shown}");
        assert!(shown.contains("\"status\""), "{shown}");
        assert_eq!(seen, [1.0], "stops at the bad line");
    }

    #[test]
    fn nginx_lines_stream_too() {
        let line = r#"203.0.113.9 - - [24/Nov/2025:16:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8.0" 0.001"#;
        let input = format!("{line}\n\n{line}\nnot a log line\n");
        let (result, seen) = collect(&input, Format::Nginx);
        assert_eq!(result.unwrap_err().line, 4);
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn caller_can_stop_early() {
        let input = "{\"ts\": 1, \"status\": 200}\n{\"ts\": 2, \"status\": 200}\nnot json\n";
        let mut calls = 0;
        let lines = for_each_event(Cursor::new(input), Format::JsonLines, |_, _| {
            calls += 1;
            ControlFlow::Break(())
        })
        .unwrap();
        assert_eq!((lines, calls), (1, 1));
    }

    #[test]
    fn invalid_utf8_is_a_line_error() {
        let input: &[u8] = b"{\"ts\": 1, \"status\": 200}\n\xff\xfe\n";
        let err =
            for_each_event(input, Format::JsonLines, |_, _| ControlFlow::Continue(())).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("UTF-8"), "{}", err.message);
    }

    #[test]
    fn overlong_line_is_a_line_error() {
        let mut input = b"{\"ts\": 1, \"status\": 200}\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        // A small buffer, so the limit is hit across many fills as with a real file.
        let reader = BufReader::with_capacity(4096, &input[..]);
        let err = for_each_event(reader, Format::JsonLines, |_, _| ControlFlow::Continue(()))
            .unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("longer than"), "{}", err.message);
    }

    #[test]
    fn line_of_exactly_the_limit_is_fine() {
        let mut line = String::from("{\"ts\": 1, \"status\": 200, \"pad\": \"");
        let pad = MAX_LINE_BYTES - line.len() - 2;
        line.extend(std::iter::repeat_n('x', pad));
        line.push_str("\"}");
        assert_eq!(line.len(), MAX_LINE_BYTES);
        line.push('\n');
        let (result, seen) = collect(&line, Format::JsonLines);
        assert_eq!(result.unwrap(), 1);
        assert_eq!(seen, [1.0]);
    }

    #[test]
    fn io_errors_become_line_errors() {
        struct Failing(usize);
        impl std::io::Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    self.0 += 1;
                    let line = b"{\"ts\": 1, \"status\": 200}\n";
                    buf[..line.len()].copy_from_slice(line);
                    Ok(line.len())
                } else {
                    Err(std::io::Error::other("disk on fire"))
                }
            }
        }
        let err = for_each_event(BufReader::new(Failing(0)), Format::JsonLines, |_, _| {
            ControlFlow::Continue(())
        })
        .unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(err.message, "disk on fire");
    }

    #[test]
    fn quote_cuts_long_text_on_a_char_boundary() {
        assert_eq!(quote("ab"), "\"ab\"");
        let long = "é".repeat(100);
        let q = quote(&long);
        assert!(q.ends_with('…') && q.len() < 80, "{q}");
    }
}
