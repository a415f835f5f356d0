//! One hunk: exactly as many lines as its header counts, each numbered in the old and the new
//! file, and a `\ No newline at end of file` marker only where git would not join two lines.

use super::parser::Parser;
use super::{err, quote, DiffError, Hunk, HunkLine, LineKind};

impl Parser<'_> {
    /// Reads one hunk, exactly as many lines as its header counts.
    pub(super) fn hunk(&mut self) -> Result<Hunk, DiffError> {
        let no = Self::no(self.at);
        let line = self.lines[self.at];
        let (old_start, old_count, new_start, new_count) = parse_hunk_header(line)
            .ok_or_else(|| err(no, format!("{} is not a hunk header", quote(line))))?;
        self.at += 1;
        let (mut old_left, mut new_left) = (old_count, new_count);
        let (mut old_no, mut new_no) = (old_start, new_start);
        let mut lines = Vec::new();
        while old_left > 0 || new_left > 0 {
            let Some(line) = self.peek() else {
                return Err(err(
                    no,
                    format!(
                        "the hunk ends early: {old_left} old and {new_left} new lines missing at \
                         the end of the patch"
                    ),
                ));
            };
            let here = Self::no(self.at);
            let (kind, text) = match line.as_bytes().first() {
                // An empty line is an empty context line whose space was stripped.
                None => (LineKind::Context, ""),
                Some(b' ') => (LineKind::Context, &line[1..]),
                Some(b'+') => (LineKind::Added, &line[1..]),
                Some(b'-') => (LineKind::Removed, &line[1..]),
                Some(_) => {
                    return Err(err(
                        here,
                        format!(
                            "{} is not a hunk line, but the hunk at line {no} still needs \
                             {old_left} old and {new_left} new lines",
                            quote(line)
                        ),
                    ))
                }
            };
            let fits = match kind {
                LineKind::Context => old_left > 0 && new_left > 0,
                LineKind::Added => new_left > 0,
                LineKind::Removed => old_left > 0,
            };
            if !fits {
                return Err(err(
                    here,
                    format!(
                        "{} is one line more than the hunk at line {no} counts",
                        quote(line)
                    ),
                ));
            }
            let (o, n) = match kind {
                LineKind::Context => {
                    old_left -= 1;
                    new_left -= 1;
                    (Some(old_no), Some(new_no))
                }
                LineKind::Added => {
                    new_left -= 1;
                    (None, Some(new_no))
                }
                LineKind::Removed => {
                    old_left -= 1;
                    (Some(old_no), None)
                }
            };
            if o.is_some() {
                old_no = old_no.saturating_add(1);
            }
            if n.is_some() {
                new_no = new_no.saturating_add(1);
            }
            self.at += 1;
            let no_newline = self.no_newline_marker(kind, old_left, new_left, here)?;
            lines.push(HunkLine {
                kind,
                text: text.to_owned(),
                old_line: o,
                new_line: n,
                patch_line: here,
                no_newline,
            });
        }
        Ok(Hunk {
            old_start,
            old_count,
            new_start,
            new_count,
            lines,
        })
    }

    /// Reads the `\ No newline at end of file` marker after a hunk line, if there is one.
    /// `git apply` takes it to strip the newline of the line before it, whatever that line is:
    /// before a line that is not the last of its side of the hunk it would join two lines into
    /// one that the hunk never shows. Such a marker is refused; one at the end of a side says
    /// the line ends its file (checked against the file when the patch is replayed).
    fn no_newline_marker(
        &mut self,
        kind: LineKind,
        old_left: u32,
        new_left: u32,
        line: usize,
    ) -> Result<bool, DiffError> {
        let Some(marker) = self.peek().filter(|l| l.starts_with('\\')) else {
            return Ok(false);
        };
        let no = Self::no(self.at);
        // git's own test: "\ " and at least 12 characters (the text is translated).
        if !marker.starts_with("\\ ") || marker.len() < 12 {
            return Err(err(
                no,
                format!(
                    "{} is not a `\\ No newline at end of file` line",
                    quote(marker)
                ),
            ));
        }
        let last = match kind {
            LineKind::Context => old_left == 0 && new_left == 0,
            LineKind::Removed => old_left == 0,
            LineKind::Added => new_left == 0,
        };
        if !last {
            return Err(err(
                no,
                format!(
                    "a `\\ No newline at end of file` marker after line {line}, which is not the \
                     last line of its side of the hunk: git apply would join it with the line \
                     after it, which the diff does not show"
                ),
            ));
        }
        self.at += 1;
        Ok(true)
    }
}

/// `@@ -a[,b] +c[,d] @@[ section]`.
fn parse_hunk_header(line: &str) -> Option<(u32, u32, u32, u32)> {
    let rest = line.strip_prefix("@@ -")?;
    let (ranges, _) = rest.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let range = |s: &str| -> Option<(u32, u32)> {
        let num = |t: &str| -> Option<u32> {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        };
        match s.split_once(',') {
            Some((start, count)) => Some((num(start)?, num(count)?)),
            None => Some((num(s)?, 1)),
        }
    };
    let (a, b) = range(old)?;
    let (c, d) = range(new)?;
    Some((a, b, c, d))
}

#[cfg(test)]
mod tests {
    use crate::trust::diff::testing::{error, one};
    use crate::trust::diff::{parse, LineKind};

    #[test]
    fn line_numbers_follow_the_hunk() {
        let d = parse(&one(
            "src/a.rs",
            "@@ -10,4 +10,4 @@ fn main() {\n ctx\n-old\n+new\n+more\n \n-gone\n",
        ))
        .unwrap();
        let lines: Vec<_> = d.files[0].hunks[0]
            .lines
            .iter()
            .map(|l| (l.kind, l.old_line, l.new_line, l.patch_line))
            .collect();
        assert_eq!(
            lines,
            [
                (LineKind::Context, Some(10), Some(10), 6),
                (LineKind::Removed, Some(11), None, 7),
                (LineKind::Added, None, Some(11), 8),
                (LineKind::Added, None, Some(12), 9),
                (LineKind::Context, Some(12), Some(13), 10),
                (LineKind::Removed, Some(13), None, 11),
            ]
        );
    }

    #[test]
    fn refuses_hunks_that_do_not_add_up() {
        let e = error(&one("src/a", "@@ -1,2 +1,2 @@\n-a\n+b\n"));
        assert!(e.to_string().contains("ends early"), "{e}");
        let e = error(&one("src/a", "@@ -1 +1 @@\n-a\n-b\n+c\n"));
        assert_eq!(e.line, 7);
        assert!(e.to_string().contains("one line more than the hunk"), "{e}");
        let e = error(&one("src/a", "@@ -1 +1 @@\n-a\n*b\n"));
        assert!(e.to_string().contains("is not a hunk line"), "{e}");
        let e = error(&one("src/a", "@@ -x +1 @@\n-a\n+b\n"));
        assert!(e.to_string().contains("is not a hunk header"), "{e}");
    }
}
