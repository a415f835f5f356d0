//! Outside text (summaries, notes, commands, a hook's output) as the reports show it: one
//! visible line, the tail of an output, a command as one would type it.

/// Lines of the redeploy hook's output shown, per stream.
pub const OUTPUT_TAIL_LINES: usize = 20;
/// Characters of one output line shown.
const OUTPUT_LINE_CHARS: usize = 300;

/// Outside text (a summary, a note, a line of output) as one visible line.
pub fn printable(s: &str) -> String {
    crate::display::line(s).into_owned()
}

/// The first 10 characters of each commit (of both ends of a range).
pub fn short_commit(commit: &str) -> String {
    let short = |c: &str| c.trim().chars().take(10).collect::<String>();
    match commit.split_once("..") {
        Some((a, b)) => format!("{}..{}", short(a), short(b)),
        None => short(commit),
    }
}

/// The last `n` non-empty lines, control characters (e.g. colour codes) made visible, each cut
/// to a readable length.
pub fn tail(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| {
            let line = printable(l);
            if line.chars().count() > OUTPUT_LINE_CHARS {
                let cut: String = line.chars().take(OUTPUT_LINE_CHARS).collect();
                format!("{cut} [...]")
            } else {
                line
            }
        })
        .collect()
}

/// A command as one might type it: words with spaces or quotes are single-quoted.
pub fn shell_line(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_quoted_as_a_shell_reads_them() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            shell_line(&words(&["/usr/bin/redeploy", "--env", "prod west", "it's"])),
            r"/usr/bin/redeploy --env 'prod west' 'it'\''s'"
        );
        assert_eq!(shell_line(&words(&[""])), "''");
    }

    #[test]
    fn a_tail_is_the_last_visible_lines_cut_to_length() {
        let long = "x".repeat(400);
        let text = format!("one\n\n\u{1b}[31mtwo\u{1b}[0m\n{long}\n");
        let got = tail(&text, 2);
        assert_eq!(got[0], "\\x1b[31mtwo\\x1b[0m");
        assert!(got[1].ends_with(" [...]") && got[1].chars().count() == 306);
        assert_eq!(
            short_commit("abcdef0123456789..0123456789abcdef"),
            "abcdef0123..0123456789"
        );
    }
}
