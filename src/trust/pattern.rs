//! Checks of the fix pattern an agent claims against the diff itself, where a diff can show it:
//! a "timeout bump" that changes more than numbers is not one, nor is one whose numbers a reader
//! could take another way (`5e3`) or that the line computes (`60000 / 2`). Pure: a diff in, a
//! verdict with a reason a person can read out.
//!
//! The checks are conservative (a mismatch denies the proposal) but written so that the real
//! thing passes: `timeout: 5s` -> `timeout: 10s`, `TIMEOUT_MS = 500` -> `TIMEOUT_MS = 2000`, a
//! Go `if x == nil { return }` inserted before a dereference. `other` is never checked, and for
//! that reason never trusted to deploy alone.

use serde::{Deserialize, Serialize};

use super::diff::{Diff, FileDiff, FileStatus, HunkLine, LineKind};

/// The fix patterns an agent can claim (the same names as `gate::ledger::PATTERNS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    NilCheck,
    TimeoutBump,
    RetryWrap,
    FeatureFlagOff,
    Other,
}

impl Pattern {
    pub const ALL: [Pattern; 5] = [
        Pattern::NilCheck,
        Pattern::TimeoutBump,
        Pattern::RetryWrap,
        Pattern::FeatureFlagOff,
        Pattern::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::NilCheck => "nil-check",
            Pattern::TimeoutBump => "timeout-bump",
            Pattern::RetryWrap => "retry-wrap",
            Pattern::FeatureFlagOff => "feature-flag-off",
            Pattern::Other => "other",
        }
    }

    pub fn parse(name: &str) -> Option<Pattern> {
        Pattern::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on a claimed pattern.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PatternCheck {
    /// The diff is what the pattern says.
    Consistent { pattern: Pattern },
    /// It is not; `reason` names the file and line.
    Mismatch { pattern: Pattern, reason: String },
    /// `other`: nothing to check against.
    NotChecked,
}

impl PatternCheck {
    pub fn is_mismatch(&self) -> bool {
        matches!(self, PatternCheck::Mismatch { .. })
    }
}

/// How many characters of a line a reason quotes.
const QUOTE_CHARS: usize = 60;
/// A nil check may drop at most this many lines it does not keep.
const NIL_CHECK_MAX_DROPPED: usize = 3;

/// A change with more added and removed lines than this is not a fix pattern, and is not read
/// line by line (which keeps the checks linear-time bounded on any patch).
pub const MAX_CHECKED_LINES: usize = 2000;

/// Checks `diff` against the claimed `pattern`.
pub fn check(pattern: Pattern, diff: &Diff) -> PatternCheck {
    if pattern == Pattern::Other {
        return PatternCheck::NotChecked;
    }
    let lines: usize = diff
        .files
        .iter()
        .flat_map(|f| f.hunks.iter())
        .map(|h| {
            h.lines
                .iter()
                .filter(|l| l.kind != LineKind::Context)
                .count()
        })
        .sum();
    if lines > MAX_CHECKED_LINES {
        return PatternCheck::Mismatch {
            pattern,
            reason: format!(
                "claimed {pattern}, but the change adds and removes {lines} lines; a fix \
                 pattern is never that large (at most {MAX_CHECKED_LINES} are checked)"
            ),
        };
    }
    let result = match pattern {
        Pattern::Other => return PatternCheck::NotChecked,
        Pattern::TimeoutBump => timeout_bump(diff),
        Pattern::NilCheck => nil_check(diff),
        Pattern::RetryWrap => retry_wrap(diff),
        Pattern::FeatureFlagOff => feature_flag_off(diff),
    };
    match result {
        Ok(()) => PatternCheck::Consistent { pattern },
        Err(why) => PatternCheck::Mismatch {
            pattern,
            reason: format!("claimed {pattern}, but {why}"),
        },
    }
}

fn quote(text: &str) -> String {
    let t = text.trim();
    let mut out: String = t.chars().take(QUOTE_CHARS).collect();
    if t.chars().count() > QUOTE_CHARS {
        out.push_str("...");
    }
    format!("`{out}`")
}

/// `path:line` of a hunk line (its new line number, or the old one for a removal).
fn at(file: &FileDiff, line: &HunkLine) -> String {
    let n = line.new_line.or(line.old_line).unwrap_or(0);
    format!("{}:{n}", file.path())
}

/// The files a pattern that edits code in place may touch: modified text files.
fn only_modified(diff: &Diff, allow_added: bool) -> Result<(), String> {
    if diff.files.is_empty() {
        return Err("the patch changes nothing".to_owned());
    }
    for f in &diff.files {
        let ok_status =
            f.status == FileStatus::Modified || (allow_added && f.status == FileStatus::Added);
        if !ok_status {
            return Err(format!(
                "{} is {} (it only edits existing files)",
                f.path(),
                f.status
            ));
        }
        if f.binary {
            return Err(format!("{} is a binary change", f.path()));
        }
        if f.is_symlink() {
            return Err(format!("{} is a symlink", f.path()));
        }
    }
    Ok(())
}

/// The runs of removed-then-added lines in each hunk, as (removed, added).
fn blocks(file: &FileDiff) -> Vec<(Vec<&HunkLine>, Vec<&HunkLine>)> {
    let mut out = Vec::new();
    for hunk in &file.hunks {
        let mut removed = Vec::new();
        let mut added = Vec::new();
        for line in &hunk.lines {
            match line.kind {
                LineKind::Context => {
                    if !removed.is_empty() || !added.is_empty() {
                        out.push((std::mem::take(&mut removed), std::mem::take(&mut added)));
                    }
                }
                LineKind::Removed => {
                    if !added.is_empty() {
                        out.push((std::mem::take(&mut removed), std::mem::take(&mut added)));
                    }
                    removed.push(line);
                }
                LineKind::Added => added.push(line),
            }
        }
        if !removed.is_empty() || !added.is_empty() {
            out.push((removed, added));
        }
    }
    out
}

/// Each block replaces lines one for one: pairs of (removed, added).
fn pairs<'f>(file: &'f FileDiff, what: &str) -> Result<Vec<(&'f HunkLine, &'f HunkLine)>, String> {
    let mut out = Vec::new();
    for (removed, added) in blocks(file) {
        if removed.len() != added.len() {
            let first = added.first().or(removed.first()).copied();
            let place = first
                .map(|l| at(file, l))
                .unwrap_or_else(|| file.path().to_owned());
            return Err(format!(
                "{place} removes {} and adds {} lines: {what} edits existing lines one for one",
                removed.len(),
                added.len()
            ));
        }
        out.extend(removed.into_iter().zip(added));
    }
    Ok(out)
}

/// Up to `n` context lines right above `line` in its hunk, nearest first: where a nested key's
/// parent (`timeouts:` above `read: 5`) is.
fn context_above<'f>(
    file: &'f FileDiff,
    line: &HunkLine,
    n: usize,
) -> impl Iterator<Item = &'f str> {
    /// How far back to look past added and removed lines.
    const REACH: usize = 64;
    let mut before: Vec<&'f str> = Vec::new();
    for h in &file.hunks {
        // Lines of a hunk are in patch order.
        if let Ok(i) = h
            .lines
            .binary_search_by_key(&line.patch_line, |l| l.patch_line)
        {
            before = h.lines[i.saturating_sub(REACH)..i]
                .iter()
                .rev()
                .filter(|l| l.kind == LineKind::Context)
                .take(n)
                .map(|l| l.text.as_str())
                .collect();
            break;
        }
    }
    before.into_iter()
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    /// Digits (with `.` and `_`) and the letters right after them (`10s`, `500ms`, `5u64`).
    Number(String, String),
    Punct(char),
}

/// Splits a line into words, numbers and punctuation; whitespace is dropped.
fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == '_')
            {
                i += 1;
            }
            let digits: String = chars[start..i].iter().collect();
            let unit_start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Number(digits, chars[unit_start..i].iter().collect()));
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Word(chars[start..i].iter().collect()));
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

/// Suffixes of a number that make it a duration.
const DURATION_UNITS: [&str; 16] = [
    "", "ns", "us", "µs", "ms", "s", "sec", "secs", "m", "min", "mins", "h", "hr", "hrs", "d",
    "msec",
];

/// Identifiers that name a time unit, which a timeout bump may switch between
/// (`Duration::from_secs(5)` -> `Duration::from_millis(7500)`, `time.Second` -> `time.Millisecond`).
const UNIT_WORDS: [&str; 20] = [
    "from_secs",
    "from_millis",
    "from_micros",
    "from_nanos",
    "from_secs_f64",
    "from_secs_f32",
    "second",
    "seconds",
    "millisecond",
    "milliseconds",
    "microsecond",
    "microseconds",
    "nanosecond",
    "nanoseconds",
    "minute",
    "minutes",
    "hour",
    "hours",
    "millis",
    "secs",
];

fn is_unit_word(w: &str) -> bool {
    UNIT_WORDS.contains(&w.to_ascii_lowercase().as_str())
}

/// Words that say a line is about time.
const TIME_WORDS: [&str; 20] = [
    "timeout",
    "time_out",
    "deadline",
    "ttl",
    "delay",
    "interval",
    "wait",
    "duration",
    "expir",
    "keepalive",
    "keep_alive",
    "latency",
    "sleep",
    "grace",
    "period",
    "_ms",
    "millis",
    "seconds",
    "secs",
    "msec",
];

fn mentions_time(text: &str) -> bool {
    let lower = text.to_lowercase();
    TIME_WORDS.iter().any(|w| lower.contains(w))
        || tokens(text).iter().any(|t| match t {
            Token::Number(_, unit) => !unit.is_empty() && DURATION_UNITS.contains(&unit.as_str()),
            Token::Word(w) => is_unit_word(w),
            Token::Punct(_) => false,
        })
}

/// Every change is a one-for-one line edit that differs only in numeric literals (and a
/// duration unit), on lines about time, and at least one of them changes. Each number that
/// changes is a plain decimal literal a reader cannot take another way (no exponent, hex,
/// digit separators or leading zero, within range), in a unit known on both sides, standing
/// alone (not computed: `60000 / 2`, `30 * 1000`), and raised by a factor of more than 1 and at
/// most [`MAX_BUMP`].
fn timeout_bump(diff: &Diff) -> Result<(), String> {
    only_modified(diff, false)?;
    let mut changes = 0;
    for file in &diff.files {
        for (old, new) in pairs(file, "a timeout bump")? {
            let (a, b) = (tokens(&old.text), tokens(&new.text));
            let lines = || format!("{} -> {}", quote(&old.text), quote(&new.text));
            let more = || format!("{} changes more than a number: {}", at(file, new), lines());
            if a.len() != b.len() {
                return Err(more());
            }
            for (x, y) in a.iter().zip(&b) {
                match (x, y) {
                    (Token::Number(..), Token::Number(..)) => {}
                    (Token::Word(w1), Token::Word(w2))
                        if w1 == w2 || (is_unit_word(w1) && is_unit_word(w2)) => {}
                    _ if x == y => {}
                    _ => return Err(more()),
                }
            }
            // The line itself, or the key it is nested under (a sibling line about time says
            // nothing about this one: `require_auth: 1` under `timeout: 5s` is not a timeout).
            let about_time = mentions_time(&old.text)
                || mentions_time(&new.text)
                || enclosing_line(file, old).is_some_and(mentions_time);
            if !about_time {
                return Err(format!(
                    "{} changes a number on a line that is not about time: {}",
                    at(file, new),
                    lines()
                ));
            }
            let not_plain = |why: String| {
                format!(
                    "{} is not a plain timeout bump: {why}: {}",
                    at(file, new),
                    lines()
                )
            };
            let reading = Reading {
                python: file.path().ends_with(".py") || file.path().ends_with(".pyi"),
                list_item: new.text.trim_start().starts_with("- "),
            };
            for (before, after) in times(&a, &b, reading).map_err(not_plain)? {
                changes += 1;
                // A bump raises the time, within reason: a timeout cut to nothing, or raised a
                // thousandfold, is another change wearing this one's name.
                let bumped = before > 0.0 && after > before && after <= MAX_BUMP * before;
                if !bumped && before != after {
                    return Err(format!(
                        "{} does not raise a time by a factor of more than 1 and at most \
                         {MAX_BUMP}: {}",
                        at(file, new),
                        lines()
                    ));
                }
            }
        }
    }
    if changes == 0 {
        return Err("no number changes".to_owned());
    }
    Ok(())
}

/// The most a timeout bump may multiply a time by.
const MAX_BUMP: f64 = 100.0;

/// What the text around a line's tokens says about how to read them.
#[derive(Clone, Copy)]
struct Reading {
    /// Python, where `//` divides.
    python: bool,
    /// The line is a YAML list item (`- 5`), whose `-` is not a minus.
    list_item: bool,
}

/// The times a line changes, before and after, in seconds where their unit is known (a
/// duration suffix, `500ms`, or the nearest unit word, `Duration::from_millis(500)`,
/// `2*time.Second`) and as they stand when neither side has one. `a` and `b` are the line's
/// tokens before and after, alike but for numbers and unit words. An error says which number
/// cannot be read as a plain time, and why.
fn times(a: &[Token], b: &[Token], reading: Reading) -> Result<Vec<(f64, f64)>, String> {
    let mut out = Vec::new();
    let mut counted_units = Vec::new();
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let (Token::Number(d1, u1), Token::Number(d2, u2)) = (x, y) else {
            continue;
        };
        let (w1, w2) = (nearest_unit_word(a, i), nearest_unit_word(b, i));
        counted_units.extend(w1.map(|(at, _)| at));
        if x == y && w1.map(|w| w.1) == w2.map(|w| w.1) {
            continue;
        }
        let text = |d: &str, u: &str| format!("`{d}{u}`");
        let (n1, s1) =
            plain_number(d1, u1).map_err(|why| format!("cannot read {}: {why}", text(d1, u1)))?;
        let (n2, s2) =
            plain_number(d2, u2).map_err(|why| format!("cannot read {}: {why}", text(d2, u2)))?;
        if let Some(op) = operator_around(b, i, reading) {
            return Err(format!(
                "{} is computed with `{op}`, not written out",
                text(d2, u2)
            ));
        }
        let (s1, s2) = (s1.or(w1.map(|w| w.1)), s2.or(w2.map(|w| w.1)));
        match (s1, s2) {
            (Some(s1), Some(s2)) => out.push((n1 * s1, n2 * s2)),
            (None, None) => out.push((n1, n2)),
            _ => {
                let (bare, unit) = if s1.is_none() {
                    (text(d1, u1), text(d2, u2))
                } else {
                    (text(d2, u2), text(d1, u1))
                };
                return Err(format!(
                    "cannot read which unit {bare} is in, while {unit} has one"
                ));
            }
        }
    }
    // A unit word switched with no number of its own: `time.Second` -> `time.Minute`.
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if let (Token::Word(w1), Token::Word(w2)) = (x, y) {
            if w1 != w2 && !counted_units.contains(&i) {
                if let (Some(s1), Some(s2)) = (unit_word_seconds(w1), unit_word_seconds(w2)) {
                    out.push((s1, s2));
                }
            }
        }
    }
    Ok(out)
}

/// The unit word nearest to token `i` of `line` (the left one on a tie), with its index and
/// its length in seconds.
fn nearest_unit_word(line: &[Token], i: usize) -> Option<(usize, f64)> {
    line.iter()
        .enumerate()
        .filter_map(|(j, t)| match t {
            Token::Word(w) => unit_word_seconds(w).map(|s| (j, s)),
            _ => None,
        })
        .min_by_key(|(j, _)| (j.abs_diff(i), *j > i))
}

/// Type suffixes of integer and float literals (Rust, C, Java): they say nothing of a unit.
const TYPE_SUFFIXES: [&str; 30] = [
    "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "f32",
    "f64", "u", "U", "l", "L", "ul", "UL", "lu", "LU", "ll", "LL", "ull", "ULL", "llu", "LLU", "f",
    "F",
];

/// A number as a timeout bump reads it: plain decimal digits (`500`, `1.5`) and a duration
/// suffix (its length in seconds), a type suffix or none. Anything a reader could take another
/// way is refused, saying why: an exponent (`5e3`), another base (`0x1F4`), digit separators
/// (`5_000`: `parseInt` reads 5), a leading zero (octal to C and YAML 1.1), a value no 64-bit
/// integer or float holds.
fn plain_number(digits: &str, unit: &str) -> Result<(f64, Option<f64>), String> {
    let mut digits = digits;
    let mut scale = suffix_seconds(unit);
    // Ruby's and Kotlin's `5.seconds`.
    if let Some(d) = digits.strip_suffix('.') {
        if let Some(s) = unit_word_seconds(unit) {
            digits = d;
            scale = Some(s);
        }
    }
    // Rust's `5_u64`.
    if let Some(d) = digits.strip_suffix('_') {
        if TYPE_SUFFIXES.contains(&unit) {
            digits = d;
        }
    }
    let exponent = unit.starts_with(['e', 'E']) && unit[1..].chars().all(|c| c.is_ascii_digit());
    if exponent {
        return Err("an exponent, which not every reader takes; write the digits out".to_owned());
    }
    if digits == "0" && unit.starts_with(['x', 'X', 'o', 'O', 'b', 'B']) {
        return Err("not a decimal number".to_owned());
    }
    if scale.is_none() && !unit.is_empty() && !TYPE_SUFFIXES.contains(&unit) {
        return Err(format!("`{unit}` is not a unit of time"));
    }
    if digits.contains('_') {
        return Err("digit separators (`_`), which not every reader takes".to_owned());
    }
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    let decimal = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if !decimal(whole) || fraction.is_some_and(|f| !decimal(f)) {
        return Err("not a decimal number".to_owned());
    }
    if whole.len() > 1 && whole.starts_with('0') {
        return Err("a leading zero, which some readers take as octal".to_owned());
    }
    let value = match fraction {
        // Each step of u64 is exact in an f64 up to 2^53, near enough beyond for a ratio.
        None => whole
            .parse::<u64>()
            .map_err(|_| "more than a 64-bit integer holds".to_owned())? as f64,
        Some(_) => digits
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| "more than a 64-bit float holds".to_owned())?,
    };
    Ok((value, scale))
}

/// The arithmetic operator that token `i` of `line` is an operand of, if any, looking through
/// brackets: `/` in `60000 / (2)`, `*` in `30 * 1000`, `-` in `-5` or `5 - 1`, `<<`, `**`.
/// Multiplying by a unit word is how Go writes a duration (`5*time.Second`), so it is not one;
/// nor is a comment's `//` (but in Python), `/*` or `*/`, an arrow, or a YAML list's `- `.
fn operator_around(line: &[Token], i: usize, reading: Reading) -> Option<String> {
    const OPERATORS: &str = "*/%+-^<>";
    let punct = |j: Option<usize>| match j.and_then(|j| line.get(j)) {
        Some(Token::Punct(c)) => Some(*c),
        _ => None,
    };
    let unit_at = |j: Option<usize>| matches!(j.and_then(|j| line.get(j)), Some(Token::Word(w)) if is_unit_word(w));
    // Left of the number, past opening brackets.
    let mut j = i;
    while j > 0 && punct(Some(j - 1)) == Some('(') {
        j -= 1;
    }
    if let Some(op) = punct(j.checked_sub(1)).filter(|c| OPERATORS.contains(*c)) {
        let before = j.checked_sub(2);
        let op2 = punct(before);
        let left = match (op2, op) {
            (Some('/'), '/') if reading.python => Some("//"),
            (Some('/'), '/' | '*') | (Some('*'), '/') => None,
            (Some('*'), '*') => Some("**"),
            (Some('<'), '<') => Some("<<"),
            (Some('>'), '>') => Some(">>"),
            (_, '<' | '>') => None,
            (_, '*') if unit_at(before) => None,
            // A YAML list item, `- 5`.
            (_, '-') if j == 1 && reading.list_item => None,
            (_, c) => Some(match c {
                '*' => "*",
                '/' => "/",
                '%' => "%",
                '+' => "+",
                '-' => "-",
                _ => "^",
            }),
        };
        if let Some(op) = left {
            return Some(op.to_owned());
        }
    }
    // Right of it, past closing brackets.
    let mut j = i;
    while punct(Some(j + 1)) == Some(')') {
        j += 1;
    }
    let op = punct(Some(j + 1)).filter(|c| OPERATORS.contains(*c))?;
    let op2 = punct(Some(j + 2));
    let right = match (op, op2) {
        ('/', Some('/')) if reading.python => "//",
        ('/', Some('/' | '*')) | ('*', Some('/')) => return None,
        ('*', Some('*')) => "**",
        ('<', Some('<')) => "<<",
        ('>', Some('>')) => ">>",
        ('<' | '>', _) => return None,
        ('-', Some('>')) => return None,
        ('*', _) => {
            // `5 * time.Second`, `5 * (time.Second)`: a chain of names ending in a unit word.
            let mut k = j + 2;
            while punct(Some(k)) == Some('(') {
                k += 1;
            }
            let mut last_unit = false;
            while let Some(t) = line.get(k) {
                match t {
                    Token::Word(w) => last_unit = is_unit_word(w),
                    Token::Punct('.' | ':') => {}
                    _ => break,
                }
                k += 1;
            }
            if last_unit {
                return None;
            }
            "*"
        }
        ('/', _) => "/",
        ('%', _) => "%",
        ('+', _) => "+",
        ('-', _) => "-",
        _ => "^",
    };
    Some(right.to_owned())
}

fn suffix_seconds(unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" | "msec" => 1e-3,
        "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" | "hr" | "hrs" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    })
}

fn unit_word_seconds(word: &str) -> Option<f64> {
    Some(match word.to_ascii_lowercase().as_str() {
        "from_secs" | "from_secs_f64" | "from_secs_f32" | "second" | "seconds" | "secs" => 1.0,
        "from_millis" | "millisecond" | "milliseconds" | "millis" => 1e-3,
        "from_micros" | "microsecond" | "microseconds" => 1e-6,
        "from_nanos" | "nanosecond" | "nanoseconds" => 1e-9,
        "minute" | "minutes" => 60.0,
        "hour" | "hours" => 3600.0,
        _ => return None,
    })
}

/// The line this one is nested under: the nearest context line above it that is indented
/// less (a YAML or TOML parent key, an enclosing block). `None` for a line at the left margin.
fn enclosing_line<'f>(file: &'f FileDiff, line: &HunkLine) -> Option<&'f str> {
    let indent = |t: &str| t.len() - t.trim_start().len();
    let own = indent(&line.text);
    if own == 0 {
        return None;
    }
    context_above(file, line, usize::MAX)
        .filter(|t| !t.trim().is_empty())
        .find(|t| indent(t) < own)
}

/// Comment lines do not count as code (a guard in a comment guards nothing).
fn is_comment(text: &str) -> bool {
    let t = text.trim_start();
    ["//", "#", "/*", "* ", "--"]
        .iter()
        .any(|c| t.starts_with(c))
        || t == "*"
}

/// What an added line may contain to count as a nil/None/null guard.
const GUARDS: [&str; 36] = [
    "== nil",
    "!= nil",
    "is None",
    "is not None",
    "== None",
    "!= None",
    "None =>",
    "== null",
    "!= null",
    "=== null",
    "!== null",
    "== undefined",
    "!= undefined",
    "=== undefined",
    "!== undefined",
    "?.",
    "??",
    "&.",
    "?:",
    "if let Some",
    "let Some(",
    "let Ok(",
    ".is_none()",
    ".is_some()",
    ".is_null()",
    "Option<",
    "Optional",
    "isNull",
    "nonNull",
    "requireNonNull",
    ".nil?",
    "isNil",
    "is_nil",
    "IS NULL",
    "IS NOT NULL",
    "if not ",
];

fn is_guard(text: &str) -> bool {
    !is_comment(text) && GUARDS.iter().any(|g| text.contains(g))
}

fn squash(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Adds at least one guard, and removes little or nothing: every removed line is kept (perhaps
/// re-indented inside the guard), except at most one per guard added, and at most three.
fn nil_check(diff: &Diff) -> Result<(), String> {
    only_modified(diff, false)?;
    let mut guards = 0;
    let mut dropped: Vec<String> = Vec::new();
    for file in &diff.files {
        let added: std::collections::HashSet<String> =
            file.added_lines().map(|l| squash(&l.text)).collect();
        guards += file.added_lines().filter(|l| is_guard(&l.text)).count();
        for line in file.removed_lines() {
            let s = squash(&line.text);
            if !s.is_empty() && !added.contains(&s) {
                dropped.push(format!("{} {}", at(file, line), quote(&line.text)));
            }
        }
    }
    if guards == 0 {
        return Err(
            "no added line tests for nil, None or null (looked for `== nil`, `is None`, `!= null`, \
             `?.`, `if let Some`, `.is_none()`, `Option<` ...)"
                .to_owned(),
        );
    }
    if dropped.len() > guards.min(NIL_CHECK_MAX_DROPPED) {
        return Err(format!(
            "it removes {} lines it does not keep ({}): a nil check adds a guard and removes \
             little or nothing",
            dropped.len(),
            dropped
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

/// Words that say a line is about retrying.
const RETRY_WORDS: [&str; 6] = [
    "retry", "retries", "backoff", "attempt", "tries", "tenacity",
];

/// The heart of a statement, as it would appear once wrapped: without the assignment in front,
/// `return`, and the trailing `;`, `,` or `?`, and with no whitespace.
fn core(text: &str) -> String {
    let mut t = text.trim();
    for prefix in ["return ", "await "] {
        t = t.strip_prefix(prefix).unwrap_or(t);
    }
    if let Some((lhs, rhs)) = t.split_once(" := ").or_else(|| t.split_once(" = ")) {
        let simple = lhs.split_whitespace().all(|w| {
            w.chars()
                .all(|c| c.is_alphanumeric() || "_:<>&,()[]*.".contains(c))
        });
        if (simple && !lhs.contains('(')) || lhs.starts_with("let ") || lhs.starts_with("var ") {
            t = rhs;
        }
    }
    let t = t.trim_end_matches([';', ',', '?', ' ']);
    squash(t)
}

/// Added lines mention a retry, and every removed line is kept, wrapped, among the added ones.
fn retry_wrap(diff: &Diff) -> Result<(), String> {
    only_modified(diff, true)?;
    let mentions = diff.files.iter().flat_map(|f| f.added_lines()).any(|l| {
        let lower = l.text.to_lowercase();
        !is_comment(&l.text) && RETRY_WORDS.iter().any(|w| lower.contains(w))
    });
    if !mentions {
        return Err("no added line mentions a retry, backoff or attempts".to_owned());
    }
    for file in &diff.files {
        let added: Vec<String> = file.added_lines().map(|l| squash(&l.text)).collect();
        for line in file.removed_lines() {
            let c = core(&line.text);
            if c.is_empty() {
                continue;
            }
            if !added.iter().any(|a| a.contains(&c)) {
                return Err(format!(
                    "{} is removed and not kept inside the retry: {}",
                    at(file, line),
                    quote(&line.text)
                ));
            }
        }
    }
    Ok(())
}

const CONFIG_EXTENSIONS: [&str; 12] = [
    "toml",
    "yaml",
    "yml",
    "json",
    "json5",
    "ini",
    "env",
    "conf",
    "cfg",
    "properties",
    "hcl",
    "flags",
];
const CONFIG_DIRS: [&str; 8] = [
    "flags",
    "feature_flags",
    "feature-flags",
    "features",
    "toggles",
    "config",
    "configs",
    "settings",
];
const ON: [&str; 6] = ["true", "yes", "on", "enabled", "enable", "1"];
const OFF: [&str; 6] = ["false", "no", "off", "disabled", "disable", "0"];

fn is_flag_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext_ok = name
        .rsplit_once('.')
        .is_some_and(|(_, ext)| CONFIG_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
        || name.starts_with(".env");
    let dir_ok = path
        .split('/')
        .rev()
        .skip(1)
        .any(|c| CONFIG_DIRS.contains(&c.to_ascii_lowercase().as_str()));
    ext_ok || dir_ok
}

/// The text of a token, for comparing words and numbers alike.
fn word(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) => Some(w.to_ascii_lowercase()),
        Token::Number(n, u) => Some(format!("{n}{u}").to_ascii_lowercase()),
        Token::Punct(_) => None,
    }
}

/// Only flag or config files change, each change a one-for-one line edit in which values flip
/// from on to off and nothing else changes.
fn feature_flag_off(diff: &Diff) -> Result<(), String> {
    only_modified(diff, false)?;
    let mut flips = 0;
    for file in &diff.files {
        if !is_flag_file(file.path()) {
            return Err(format!(
                "{} is not a flag or config file (a {}, or a file under flags/, config/ ...)",
                file.path(),
                CONFIG_EXTENSIONS[..10].join("/")
            ));
        }
        for (old, new) in pairs(file, "a flag flip")? {
            let (a, b) = (tokens(&old.text), tokens(&new.text));
            let more = || {
                format!(
                    "{} changes more than an on/off value: {} -> {}",
                    at(file, new),
                    quote(&old.text),
                    quote(&new.text)
                )
            };
            if a.len() != b.len() {
                return Err(more());
            }
            for (x, y) in a.iter().zip(&b) {
                if x == y {
                    continue;
                }
                match (word(x), word(y)) {
                    (Some(on), Some(off))
                        if ON.contains(&on.as_str()) && OFF.contains(&off.as_str()) =>
                    {
                        flips += 1
                    }
                    (Some(_), Some(_)) if word(x) == word(y) => {}
                    (Some(from), Some(to))
                        if OFF.contains(&from.as_str()) || ON.contains(&to.as_str()) =>
                    {
                        return Err(format!(
                            "{} turns something on, not off: {} -> {}",
                            at(file, new),
                            quote(&old.text),
                            quote(&new.text)
                        ))
                    }
                    _ => return Err(more()),
                }
            }
        }
    }
    if flips == 0 {
        return Err("no value flips from on to off".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::diff::parse;

    /// A one-file patch replacing `old` lines with `new` lines at line 10 of `path`.
    fn edit(path: &str, old: &[&str], new: &[&str]) -> Diff {
        let mut p = format!(
            "diff --git a/{path} b/{path}\nindex 1111111..2222222 100644\n--- a/{path}\n+++ b/{path}\n@@ -9,{} +9,{} @@\n ctx\n",
            old.len() + 1,
            new.len() + 1
        );
        for l in old {
            p.push_str(&format!("-{l}\n"));
        }
        for l in new {
            p.push_str(&format!("+{l}\n"));
        }
        parse(&p).unwrap()
    }

    fn reason(pattern: Pattern, diff: &Diff) -> String {
        match check(pattern, diff) {
            PatternCheck::Mismatch { reason, .. } => reason,
            other => panic!("expected a mismatch for {pattern}, got {other:?}"),
        }
    }

    fn consistent(pattern: Pattern, diff: &Diff) {
        assert_eq!(
            check(pattern, diff),
            PatternCheck::Consistent { pattern },
            "{diff:#?}"
        );
    }

    #[test]
    fn real_timeout_bumps_pass() {
        for (old, new) in [
            ("    timeout: 5s", "    timeout: 10s"),
            (
                "const TIMEOUT_MS: u64 = 500;",
                "const TIMEOUT_MS: u64 = 2000;",
            ),
            ("TIMEOUT_MS = 500", "TIMEOUT_MS   =   2000"),
            (
                "let client = Client::new().timeout(Duration::from_secs(5));",
                "let client = Client::new().timeout(Duration::from_millis(7500));",
            ),
            (
                "\tctx, cancel := context.WithTimeout(ctx, 2*time.Second)",
                "\tctx, cancel := context.WithTimeout(ctx, 5*time.Second)",
            ),
            ("  read_timeout = \"1.5s\"", "  read_timeout = \"3s\""),
            ("proxy_read_timeout 30;", "proxy_read_timeout 60;"),
        ] {
            consistent(Pattern::TimeoutBump, &edit("src/client.rs", &[old], &[new]));
        }
    }

    #[test]
    fn a_timeout_bump_that_changes_more_than_a_number_is_not_one() {
        let d = edit(
            "src/client.rs",
            &["    timeout: 5s,"],
            &["    timeout: 10s, verify_tls: false,"],
        );
        let r = reason(Pattern::TimeoutBump, &d);
        assert!(
            r.starts_with("claimed timeout-bump, but src/client.rs:10 changes more than a number"),
            "{r}"
        );
        assert!(r.contains("verify_tls"), "{r}");

        let d = edit(
            "src/a.rs",
            &["timeout = 5"],
            &["timeout = 5", "retries = 9"],
        );
        assert!(reason(Pattern::TimeoutBump, &d).contains("removes 1 and adds 2 lines"));

        let d = edit(
            "src/a.rs",
            &["max_connections = 10"],
            &["max_connections = 1000"],
        );
        assert!(reason(Pattern::TimeoutBump, &d).contains("not about time"));

        let d = edit("src/a.rs", &["timeout = 5"], &["timeout = -5"]);
        assert!(reason(Pattern::TimeoutBump, &d).contains("changes more than a number"));

        let d = edit("src/a.rs", &["timeout = 5"], &["timeout = 0x5"]);
        assert!(reason(Pattern::TimeoutBump, &d).contains("cannot read `0x5`"));
    }

    #[test]
    fn a_number_a_reader_could_take_another_way_is_not_a_plain_timeout_bump() {
        let huge_float = format!("timeout = 1{}.0", "0".repeat(400));
        for (old, new, why) in [
            (
                "timeout = 5000",
                "timeout = 6e3",
                "cannot read `6e3`: an exponent",
            ),
            (
                "timeout = 5e3",
                "timeout = 9e3",
                "cannot read `5e3`: an exponent",
            ),
            (
                "TIMEOUT_MS = 0x1F4",
                "TIMEOUT_MS = 0x3E8",
                "cannot read `0x1F4`: not a decimal number",
            ),
            (
                "TIMEOUT_MS = 5_000",
                "TIMEOUT_MS = 6_000",
                "cannot read `5_000`: digit separators",
            ),
            (
                "TIMEOUT_MS=5000",
                "TIMEOUT_MS=50_000",
                "cannot read `50_000`: digit separators",
            ),
            (
                "timeout = 500",
                "timeout = 5s",
                "cannot read which unit `500` is in, while `5s` has one",
            ),
            (
                "timeout = 0500",
                "timeout = 0600",
                "cannot read `0500`: a leading zero",
            ),
            (
                "timeout_ms = 1",
                "timeout_ms = 18446744073709551616",
                "cannot read `18446744073709551616`: more than a 64-bit integer holds",
            ),
            (
                "timeout = 1.0",
                &huge_float,
                "more than a 64-bit float holds",
            ),
            (
                "timeout = 5x",
                "timeout = 6x",
                "cannot read `5x`: `x` is not a unit of time",
            ),
            (
                "timeout = 1.2.3",
                "timeout = 1.2.4",
                "cannot read `1.2.3`: not a decimal number",
            ),
            // 0.005 s to 0.0005 s, read as 3 -> 4.
            (
                "timeout = 5e-3",
                "timeout = 5e-4",
                "`4` is computed with `-`",
            ),
        ] {
            let r = reason(Pattern::TimeoutBump, &edit("src/a.rs", &[old], &[new]));
            assert!(
                r.starts_with(
                    "claimed timeout-bump, but src/a.rs:10 is not a plain timeout bump: "
                ),
                "{old} -> {new}: {r}"
            );
            assert!(r.contains(why), "{old} -> {new}: {r}");
        }
    }

    #[test]
    fn a_bump_computed_in_the_line_is_not_a_plain_one() {
        for (path, old, new, op) in [
            (
                "src/a.rs",
                "TIMEOUT = 60000 / 2",
                "TIMEOUT = 60000 / 100",
                "`100` is computed with `/`",
            ),
            (
                "src/a.rs",
                "TIMEOUT = 60000 / 1",
                "TIMEOUT = 90000 / 1",
                "`90000` is computed with `/`",
            ),
            (
                "src/a.js",
                "const TIMEOUT = 30 * 1000;",
                "const TIMEOUT = 60 * 1000;",
                "`60` is computed with `*`",
            ),
            (
                "src/a.rs",
                "TIMEOUT = (60000) / (2)",
                "TIMEOUT = (60000) / (100)",
                "with `/`",
            ),
            (
                "src/a.rs",
                "timeout = 1 << 10",
                "timeout = 1 << 12",
                "with `<<`",
            ),
            (
                "src/a.py",
                "timeout = 2 ** 10",
                "timeout = 2 ** 12",
                "with `**`",
            ),
            (
                "src/a.py",
                "TIMEOUT = 60000 // 2",
                "TIMEOUT = 60000 // 100",
                "with `//`",
            ),
            (
                "src/a.rs",
                "timeout = 5000 - 1",
                "timeout = 5000 - 99",
                "with `-`",
            ),
            ("src/a.rs", "timeout = -5", "timeout = -10", "with `-`"),
            ("config/app.yaml", "-5  # delay", "-10  # delay", "with `-`"),
            (
                "src/a.rs",
                "timeout = 5 * x",
                "timeout = 10 * x",
                "with `*`",
            ),
        ] {
            let r = reason(Pattern::TimeoutBump, &edit(path, &[old], &[new]));
            assert!(
                r.contains("is not a plain timeout bump: "),
                "{old} -> {new}: {r}"
            );
            assert!(r.contains(op), "{old} -> {new}: {r}");
        }
        for (path, old, new) in [
            (
                "src/a.go",
                "\tctx, cancel := context.WithTimeout(ctx, time.Second * 2)",
                "\tctx, cancel := context.WithTimeout(ctx, time.Second * 5)",
            ),
            (
                "src/a.go",
                "\td := 2 * (time.Second)",
                "\td := 5 * (time.Second)",
            ),
            (
                "src/a.rs",
                "timeout_ms = 5000 // 5 seconds",
                "timeout_ms = 10000 // 10 seconds",
            ),
            (
                "src/a.c",
                "timeout_ms = 5000; /* 5 s */",
                "timeout_ms = 10000; /* 10 s */",
            ),
            ("config/app.yaml", "- 500  # delay", "- 1000  # delay"),
            (
                "src/a.c",
                "timeout_ms = /* was 2 s */ 5000;",
                "timeout_ms = /* was 2 s */ 10000;",
            ),
            (
                "config/app.rb",
                "  timeout 5.seconds",
                "  timeout 10.seconds",
            ),
            (
                "src/a.rs",
                "const TIMEOUT_MS: u64 = 5_u64;",
                "const TIMEOUT_MS: u64 = 10_u64;",
            ),
            ("src/a.rs", "timeout: 500ms", "timeout: 5s"),
        ] {
            consistent(Pattern::TimeoutBump, &edit(path, &[old], &[new]));
        }
    }

    #[test]
    fn each_number_is_read_in_its_own_unit() {
        for (old, new) in [
            // 10 ms to 10 s.
            (
                "let t = Duration::from_secs(5).max(Duration::from_millis(10));",
                "let t = Duration::from_secs(5).max(Duration::from_secs(10));",
            ),
            // A unit word alone: a second to an hour.
            (
                "\tctx, cancel := context.WithTimeout(ctx, time.Second)",
                "\tctx, cancel := context.WithTimeout(ctx, time.Hour)",
            ),
        ] {
            let r = reason(Pattern::TimeoutBump, &edit("src/a.rs", &[old], &[new]));
            assert!(r.contains("does not raise a time"), "{old} -> {new}: {r}");
        }
        consistent(
            Pattern::TimeoutBump,
            &edit(
                "src/a.go",
                &["\tctx, cancel := context.WithTimeout(ctx, time.Second)"],
                &["\tctx, cancel := context.WithTimeout(ctx, time.Minute)"],
            ),
        );
    }

    #[test]
    fn a_nested_key_is_about_time_when_its_parent_says_so() {
        let patch = "diff --git a/config/app.yaml b/config/app.yaml\nindex 1111111..2222222 100644\n--- a/config/app.yaml\n+++ b/config/app.yaml\n@@ -1,3 +1,3 @@\n http:\n   timeouts:\n-    read: 5\n+    read: 10\n";
        consistent(Pattern::TimeoutBump, &parse(patch).unwrap());
        let far = patch
            .replace(
                "   timeouts:\n",
                "   timeouts:\n   a: 1\n   b: 2\n   c: 3\n",
            )
            .replace("-1,3 +1,3", "-1,6 +1,6");
        assert!(reason(Pattern::TimeoutBump, &parse(&far).unwrap()).contains("not about time"));
    }

    #[test]
    fn a_sibling_about_time_does_not_make_a_line_a_timeout() {
        let patch = "diff --git a/config/flags/app.yaml b/config/flags/app.yaml\nindex 1111111..2222222 100644\n--- a/config/flags/app.yaml\n+++ b/config/flags/app.yaml\n@@ -1,3 +1,3 @@\n timeout: 5s\n max_connections: 100\n-require_auth: 1\n+require_auth: 0\n";
        let r = reason(Pattern::TimeoutBump, &parse(patch).unwrap());
        assert!(r.contains("not about time"), "{r}");
    }

    #[test]
    fn a_timeout_bump_raises_the_time_within_reason() {
        for (old, new) in [
            (
                "let t = interval_secs.min(10);",
                "let t = interval_secs.min(0);",
            ),
            (
                "let t = interval_secs.min(10);",
                "let t = interval_secs.min(1);",
            ),
            (
                "let t = interval_secs.min(10);",
                "let t = interval_secs.min(10000000000);",
            ),
            ("timeout: 5s", "timeout: 500ms"),
            (
                "timeout(Duration::from_secs(5))",
                "timeout(Duration::from_millis(500))",
            ),
        ] {
            let r = reason(Pattern::TimeoutBump, &edit("src/a.rs", &[old], &[new]));
            assert!(r.contains("does not raise a time"), "{old} -> {new}: {r}");
        }
        consistent(
            Pattern::TimeoutBump,
            &edit("src/a.rs", &["timeout: 5s"], &["timeout: 2m"]),
        );
    }

    #[test]
    fn a_pure_addition_is_not_a_timeout_bump() {
        let d = edit("src/a.rs", &[], &["timeout = 5"]);
        assert!(reason(Pattern::TimeoutBump, &d).contains("removes 0 and adds 1"));
    }

    #[test]
    fn real_nil_checks_pass() {
        consistent(
            Pattern::NilCheck,
            &edit(
                "handler.go",
                &[],
                &[
                    "\tif user.Profile == nil {",
                    "\t\treturn \"\", ErrNoProfile",
                    "\t}",
                ],
            ),
        );
        consistent(
            Pattern::NilCheck,
            &edit(
                "src/cart.rs",
                &["    let item = cart.items.get(id).unwrap();"],
                &[
                    "    let Some(item) = cart.items.get(id) else {",
                    "        return Err(CartError::Missing(id));",
                    "    };",
                ],
            ),
        );
        consistent(
            Pattern::NilCheck,
            &edit(
                "app/views.py",
                &["    return order.customer.name"],
                &[
                    "    if order.customer is None:",
                    "        return \"\"",
                    "    return order.customer.name",
                ],
            ),
        );
    }

    #[test]
    fn a_nil_check_without_a_guard_or_that_rewrites_code_is_not_one() {
        let d = edit("src/a.go", &["\tx := f()"], &["\tx := g()"]);
        assert!(reason(Pattern::NilCheck, &d).contains("no added line tests for nil"));

        let d = edit("src/a.go", &[], &["\t// if x == nil we crash"]);
        assert!(
            reason(Pattern::NilCheck, &d).contains("no added line tests for nil"),
            "a comment guards nothing"
        );

        let d = edit(
            "src/a.go",
            &["\ta := 1", "\tb := 2", "\tc := 3", "\td := 4"],
            &["\tif x == nil {", "\t\treturn", "\t}"],
        );
        let r = reason(Pattern::NilCheck, &d);
        assert!(r.contains("removes 4 lines it does not keep"), "{r}");
        assert!(r.contains("src/a.go:10"), "{r}");
    }

    #[test]
    fn a_real_retry_wrap_passes_and_a_rewrite_does_not() {
        consistent(
            Pattern::RetryWrap,
            &edit(
                "src/pay.rs",
                &["    let resp = client.charge(&order).await?;"],
                &[
                    "    let resp = retry(Backoff::default(), 3, || async {",
                    "        client.charge(&order).await",
                    "    }).await?;",
                ],
            ),
        );
        let d = edit(
            "src/pay.rs",
            &["    let resp = client.charge(&order).await?;"],
            &["    let resp = retry(3, || client.refund(&order)).await?;"],
        );
        let r = reason(Pattern::RetryWrap, &d);
        assert!(r.contains("src/pay.rs:10 is removed and not kept"), "{r}");

        let d = edit("src/pay.rs", &["    a()"], &["    loop { a() }"]);
        assert!(reason(Pattern::RetryWrap, &d).contains("no added line mentions a retry"));
    }

    #[test]
    fn a_flag_turned_off_in_a_config_file_passes() {
        consistent(
            Pattern::FeatureFlagOff,
            &edit(
                "config/flags/checkout.toml",
                &["new_checkout = true"],
                &["new_checkout = false"],
            ),
        );
        consistent(
            Pattern::FeatureFlagOff,
            &edit(
                "deploy/values.yaml",
                &["  recommendations: { enabled: yes }"],
                &["  recommendations: { enabled: no }"],
            ),
        );
    }

    #[test]
    fn a_flag_change_elsewhere_or_turning_things_on_is_not_flag_off() {
        let d = edit(
            "src/checkout.rs",
            &["const NEW: bool = true;"],
            &["const NEW: bool = false;"],
        );
        assert!(reason(Pattern::FeatureFlagOff, &d)
            .contains("src/checkout.rs is not a flag or config file"));

        let d = edit(
            "config/flags.toml",
            &["new_checkout = false"],
            &["new_checkout = true"],
        );
        assert!(reason(Pattern::FeatureFlagOff, &d).contains("turns something on"));

        let d = edit("config/flags.toml", &["url = \"a\""], &["url = \"b\""]);
        assert!(reason(Pattern::FeatureFlagOff, &d).contains("changes more than an on/off value"));

        let d = edit(
            "config/flags.toml",
            &["a = true"],
            &["a = false", "b = false"],
        );
        assert!(reason(Pattern::FeatureFlagOff, &d).contains("removes 1 and adds 2"));
    }

    #[test]
    fn other_is_never_checked_and_new_files_are_not_edits() {
        let d = edit("src/a.rs", &["x"], &["y"]);
        assert_eq!(check(Pattern::Other, &d), PatternCheck::NotChecked);
        let added = parse(
            "diff --git a/src/t.rs b/src/t.rs\nnew file mode 100644\nindex 0000000..1111111\n--- /dev/null\n+++ b/src/t.rs\n@@ -0,0 +1 @@\n+timeout = 5\n",
        )
        .unwrap();
        assert!(reason(Pattern::TimeoutBump, &added).contains("src/t.rs is added"));
    }

    #[test]
    fn a_huge_change_is_not_a_fix_pattern() {
        let old: Vec<String> = (0..1001).map(|i| format!("timeout_{i} = 5")).collect();
        let new: Vec<String> = (0..1001).map(|i| format!("timeout_{i} = 6")).collect();
        let old: Vec<&str> = old.iter().map(String::as_str).collect();
        let new: Vec<&str> = new.iter().map(String::as_str).collect();
        let d = edit("src/a.rs", &old, &new);
        assert!(reason(Pattern::TimeoutBump, &d).contains("adds and removes 2002 lines"));
        let d = edit("src/a.rs", &old[..1000], &new[..1000]);
        consistent(Pattern::TimeoutBump, &d);
    }

    #[test]
    fn pattern_names_round_trip() {
        for p in Pattern::ALL {
            assert_eq!(Pattern::parse(p.as_str()), Some(p));
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert_eq!(Pattern::parse("Timeout-Bump"), None);
    }
}
