//! Names as git writes them in a patch (as they are, or C-quoted; behind `a/` and `b/`), and
//! which repository paths are acceptable at all.

use super::{err, quote, DiffError};

/// A `rename from`/`copy to` argument: a path, possibly C-quoted, without prefix.
pub(super) fn path_arg(no: usize, text: &str) -> Result<String, DiffError> {
    let path = if text.starts_with('"') {
        let (path, rest) = unquote(text).map_err(|p| err(no, p))?;
        if !rest.is_empty() {
            return Err(err(
                no,
                format!("text after the quoted path: {}", quote(rest)),
            ));
        }
        path
    } else {
        text.to_owned()
    };
    check_path(&path).map_err(|p| err(no, format!("path {path:?} {p}")))?;
    Ok(path)
}

/// The path of a `---`/`+++` line: `None` for /dev/null, else the path after `prefix`.
pub(super) fn side_path(no: usize, text: &str, prefix: &str) -> Result<Option<String>, DiffError> {
    if text == "/dev/null" {
        return Ok(None);
    }
    let full = if text.starts_with('"') {
        let (path, rest) = unquote(text).map_err(|p| err(no, p))?;
        if !rest.is_empty() && rest != "\t" {
            return Err(err(
                no,
                format!("text after the quoted path: {}", quote(rest)),
            ));
        }
        path
    } else {
        // git ends the name with a tab when it contains a space.
        text.strip_suffix('\t').unwrap_or(text).to_owned()
    };
    let Some(path) = full.strip_prefix(prefix) else {
        return Err(err(
            no,
            format!(
                "{} does not start with {prefix:?} (send the patch with git's default prefixes)",
                quote(&full)
            ),
        ));
    };
    check_path(path).map_err(|p| err(no, format!("path {path:?} {p}")))?;
    Ok(Some(path.to_owned()))
}

/// The two names of `diff --git a/X b/Y`, when they can be told apart (with unquoted names that
/// contain " b/", only when both are the same); `Ok(None)` when ambiguous.
pub(super) fn header_names(rest: &str) -> Result<Option<(String, String)>, String> {
    let strip = |side: String, prefix: &str| -> Result<String, String> {
        side.strip_prefix(prefix)
            .map(str::to_owned)
            .ok_or_else(|| {
                format!("{side:?} does not start with {prefix:?} (send the patch with git's default prefixes)")
            })
    };
    if rest.starts_with('"') {
        let (a, tail) = unquote(rest)?;
        let b = tail
            .strip_prefix(' ')
            .ok_or_else(|| "expected a space after the first name".to_owned())?;
        let b = if b.starts_with('"') {
            let (b, tail) = unquote(b)?;
            if !tail.is_empty() {
                return Err(format!("text after the second name: {}", quote(tail)));
            }
            b
        } else {
            b.to_owned()
        };
        return Ok(Some((strip(a, "a/")?, strip(b, "b/")?)));
    }
    if let Some(at) = rest.find(" \"") {
        let (b, tail) = unquote(&rest[at + 1..])?;
        if !tail.is_empty() {
            return Err(format!("text after the second name: {}", quote(tail)));
        }
        return Ok(Some((strip(rest[..at].to_owned(), "a/")?, strip(b, "b/")?)));
    }
    if !rest.starts_with("a/") {
        return Err(format!(
            "{} does not start with \"a/\" (send the patch with git's default prefixes)",
            quote(rest)
        ));
    }
    let splits: Vec<usize> = rest.match_indices(" b/").map(|(i, _)| i).collect();
    match splits.as_slice() {
        [] => Err(format!("no \" b/\" name in {}", quote(rest))),
        [one] => Ok(Some((rest[2..*one].to_owned(), rest[one + 3..].to_owned()))),
        many => {
            // Only the same name on both sides can be told apart.
            for &i in many {
                if rest[2..i] == rest[i + 3..] {
                    return Ok(Some((rest[2..i].to_owned(), rest[i + 3..].to_owned())));
                }
            }
            Ok(None)
        }
    }
}

/// Reads a C-quoted string as git writes it; returns it and the text after the closing quote.
fn unquote(text: &str) -> Result<(String, &str), String> {
    let body = text
        .strip_prefix('"')
        .ok_or_else(|| "expected a quoted name".to_owned())?;
    let bytes = body.as_bytes();
    let mut out: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let s = String::from_utf8(out)
                    .map_err(|_| "a quoted name that is not UTF-8".to_owned())?;
                return Ok((s, &body[i + 1..]));
            }
            b'\\' => {
                let c = *bytes
                    .get(i + 1)
                    .ok_or("a quoted name ends in a backslash")?;
                i += 2;
                out.push(match c {
                    b'a' => 7,
                    b'b' => 8,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'v' => 11,
                    b'f' => 12,
                    b'r' => b'\r',
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'0'..=b'3' => {
                        let digits = bytes.get(i..i + 2).ok_or("a short octal escape")?;
                        if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                            return Err("a bad octal escape in a quoted name".to_owned());
                        }
                        i += 2;
                        (c - b'0') * 64 + (digits[0] - b'0') * 8 + (digits[1] - b'0')
                    }
                    other => {
                        return Err(format!(
                            "an unknown escape \\{} in a quoted name",
                            char::from(other)
                        ))
                    }
                });
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Err("a quoted name without its closing quote".to_owned())
}

/// How git writes a name in a header: as is, or C-quoted when it has special characters.
pub(super) fn git_quote(name: &str) -> String {
    let special = name
        .bytes()
        .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b));
    if !special {
        return name.to_owned();
    }
    let mut out = String::from("\"");
    for b in name.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:03o}")),
        }
    }
    out.push('"');
    out
}

/// Rejects a header with NUL or control characters (git quotes names that have them).
pub(super) fn check_chars(no: usize, text: &str) -> Result<(), DiffError> {
    if text.chars().any(char::is_control) {
        return Err(err(
            no,
            format!("{} contains a control character", quote(text)),
        ));
    }
    Ok(())
}

/// Why a repository path is not acceptable, if it is not.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("is empty".to_owned());
    }
    if path.starts_with('/') {
        return Err("is absolute".to_owned());
    }
    if path.chars().any(char::is_control) {
        return Err("contains a NUL or control character".to_owned());
    }
    if path.contains('\\') {
        return Err("contains a backslash".to_owned());
    }
    for part in path.split('/') {
        match part {
            "" => return Err("has an empty component (`//` or a trailing `/`)".to_owned()),
            "." => return Err("has a `.` component".to_owned()),
            ".." => return Err("has a `..` component".to_owned()),
            _ if part.eq_ignore_ascii_case(".git") => {
                return Err("has a `.git` component".to_owned())
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::trust::diff::testing::{error, one};

    #[test]
    fn refuses_paths_that_escape_or_hide() {
        let cases = [
            ("../etc/passwd", "`..` component"),
            ("src/../migrations/1.sql", "`..` component"),
            ("/etc/passwd", "is absolute"),
            ("src/.git/config", "`.git` component"),
            (".GIT/hooks/post-commit", "`.git` component"),
            ("src//a.rs", "empty component"),
            ("src/./a.rs", "`.` component"),
            ("src\\..\\x", "backslash"),
        ];
        for (path, expected) in cases {
            let e = error(&one(path, "@@ -1 +1 @@\n-a\n+b\n"));
            assert!(e.to_string().contains(expected), "{path}: {e}");
            assert_eq!(e.line, 1, "{path}: {e}");
        }
        let e = error("diff --git /etc/passwd /etc/passwd\nold mode 100644\nnew mode 100755\n");
        assert!(e.to_string().contains("default prefixes"), "{e}");
        let e =
            error("diff --git \"a/src/x\\ty\" \"b/src/x\\ty\"\nold mode 100644\nnew mode 100755\n");
        assert!(e.to_string().contains("control character"), "{e}");
        let e = error("diff --git a/src/x\u{0}y b/src/x\u{0}y\nold mode 100644\nnew mode 100755\n");
        assert!(e.to_string().contains("control character"), "{e}");
    }
}
