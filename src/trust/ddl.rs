//! SQL that changes a schema, found in any file's text: a `.sql` file, or a query in a string of
//! code (`conn.execute("TRUNCATE orders")`). Read case-insensitively over whitespace, newlines
//! and comments, so DDL split over lines or by a comment is still DDL.
//!
//! Phrases only SQL uses (`DROP TABLE`) count wherever they are. Words that code and prose use
//! too (`TRUNCATE`, `RENAME`, `COMMENT ON`: `v.truncate(3)`, `#[serde(rename = "id")]`, "see
//! the comment on") count as a statement's: a whole word followed by a name, and outside `.sql`
//! files only where a statement starts or inside an `ALTER` statement.

use std::collections::{BTreeMap, BTreeSet};

/// How a DDL phrase is recognised.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Wherever it occurs.
    Phrase,
    /// As a statement's word (see [`is_statement`]).
    Statement,
}

/// SQL that changes a schema. Where two start at the same place, the first listed is the one
/// found (`RENAME COLUMN`, not also `RENAME`).
const DDL: [(&str, Kind); 16] = [
    ("CREATE TABLE", Kind::Phrase),
    ("ALTER TABLE", Kind::Phrase),
    ("DROP TABLE", Kind::Phrase),
    ("CREATE INDEX", Kind::Phrase),
    ("CREATE UNIQUE INDEX", Kind::Phrase),
    ("DROP INDEX", Kind::Phrase),
    ("ADD COLUMN", Kind::Phrase),
    ("DROP COLUMN", Kind::Phrase),
    ("RENAME COLUMN", Kind::Phrase),
    ("DROP SCHEMA", Kind::Phrase),
    ("DROP DATABASE", Kind::Phrase),
    // SQL Server's rename.
    ("SP_RENAME", Kind::Phrase),
    ("TRUNCATE TABLE", Kind::Statement),
    ("TRUNCATE", Kind::Statement),
    ("RENAME", Kind::Statement),
    ("COMMENT ON", Kind::Statement),
];

/// Keywords after which a statement starts (procedural bodies, dynamic SQL).
const STATEMENT_KEYWORDS: [&str; 4] = ["EXECUTE", "EXEC", "BEGIN", "LOOP"];
/// Keywords after which a statement starts in a branch (`IF x THEN TRUNCATE t`): only with a
/// condition's keyword before them (however many statements back: `IF x THEN y; ELSE
/// TRUNCATE t`), since prose says "then rename" too.
const BRANCH_KEYWORDS: [&str; 2] = ["THEN", "ELSE"];
const CONDITION_KEYWORDS: [&str; 4] = ["IF", "ELSIF", "WHEN", "CASE"];

/// Characters that end a statement's word where a name should follow: a call, an assignment,
/// a key, the end of a list or string (`truncate(`, `rename = `, `"rename": `, `'truncate',`).
const NOT_A_NAME: &str = "()=:,;.!?<>+*&|}]";

/// Files read by people, not run: only SQL-only phrases count in them.
const PROSE: [&str; 6] = [".md", ".markdown", ".txt", ".rst", ".adoc", ".textile"];

/// How far back a statement's first keyword (`ALTER`, `IF`) is looked for.
const STATEMENT_REACH: usize = 512;

/// Where each DDL phrase occurs in a file's text: phrase -> lines of its occurrences.
pub fn find(path: &str, text: &str) -> BTreeMap<&'static str, Vec<usize>> {
    let lower = path.to_ascii_lowercase();
    let sql = lower.ends_with(".sql");
    // Documentation is prose: "Rename the helper" starts a line there and runs nothing. Its
    // SQL-only phrases (`DROP TABLE`) still count.
    let prose = PROSE.iter().any(|ext| lower.ends_with(ext));
    let (words, lines) = sql_words(text, sql);
    let mut claimed = BTreeSet::new();
    let mut found: BTreeMap<&'static str, Vec<usize>> = BTreeMap::new();
    for (name, kind) in DDL {
        let phrase: Vec<char> = name.chars().collect();
        for start in 0..words.len() {
            if !words[start..].starts_with(&phrase) {
                continue;
            }
            let counts = kind == Kind::Phrase
                || (!prose && is_statement(&words, &lines, start, phrase.len(), sql));
            if counts && claimed.insert(start) {
                found
                    .entry(name)
                    .or_default()
                    .push(lines.get(start).copied().unwrap_or(0));
            }
        }
    }
    found
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether the word at `start..start + len` of `words` is a statement's: a whole word, not a
/// method, path, option or variable (no `.`, `:`, `-`, `/` or `@` right before it), followed by
/// a name (perhaps quoted, or a placeholder; see [`NOT_A_NAME`]); and outside a `.sql` file,
/// where a statement starts (the start of the text or of a line, after `;`, a quote, a bracket,
/// `$` or a keyword that runs one) or inside an `ALTER` statement.
fn is_statement(words: &[char], lines: &[usize], start: usize, len: usize, sql: bool) -> bool {
    let end = start + len;
    let glued_before = start
        .checked_sub(1)
        .and_then(|i| words.get(i))
        .is_some_and(|c| is_word_char(*c) || ".:-/@".contains(*c));
    if glued_before || words.get(end).is_some_and(|c| is_word_char(*c)) {
        return false;
    }
    let mut next = end;
    if words.get(next) == Some(&' ') {
        next += 1;
    }
    if words.get(next).is_some_and(|c| "\"'`[".contains(*c)) {
        next += 1;
    }
    if words.get(next).is_none_or(|c| NOT_A_NAME.contains(*c)) {
        return false;
    }
    if sql {
        return true;
    }
    let mut k = start;
    while k > 0 && words[k - 1] == ' ' {
        k -= 1;
    }
    let Some(k) = k.checked_sub(1) else {
        return true; // the start of the text
    };
    if lines.get(k) < lines.get(start) || ";\"'`({}$".contains(words[k]) {
        return true;
    }
    let keyword_start = words[..=k]
        .iter()
        .rposition(|c| !is_word_char(*c))
        .map_or(0, |i| i + 1);
    let keyword: String = words[keyword_start..=k].iter().collect();
    let keyword = keyword.as_str();
    STATEMENT_KEYWORDS.contains(&keyword)
        || (BRANCH_KEYWORDS.contains(&keyword)
            && earlier(words, keyword_start, &CONDITION_KEYWORDS, ""))
        || earlier(words, start, &["ALTER"], ";\"'`")
}

/// Whether one of `keywords` comes before `start`, at most [`STATEMENT_REACH`] characters back
/// and with none of `stops` (the end of a statement or string) between.
fn earlier(words: &[char], start: usize, keywords: &[&str], stops: &str) -> bool {
    let stretch = &words[start.saturating_sub(STATEMENT_REACH)..start];
    let stretch = match stretch.iter().rposition(|c| stops.contains(*c)) {
        Some(i) => &stretch[i + 1..],
        None => stretch,
    };
    stretch
        .split(|c| !is_word_char(*c))
        .any(|word| keywords.iter().any(|k| word.iter().copied().eq(k.chars())))
}

/// A file's text as SQL reads it, upper case, every run of whitespace (newlines too) one
/// space, comments out (`/* */` everywhere, `--` in `.sql` files), each character with the
/// line it came from: DDL split over lines or by comments is still DDL.
fn sql_words(text: &str, sql: bool) -> (Vec<char>, Vec<usize>) {
    let mut out = Vec::new();
    let mut lines = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let space = |out: &mut Vec<char>, lines: &mut Vec<usize>, line: usize| {
        if out.last().is_some_and(|c| *c != ' ') {
            out.push(' ');
            lines.push(line);
        }
    };
    while let Some(c) = chars.next() {
        if c == '/' && chars.peek() == Some(&'*') {
            chars.next();
            let mut prev = ' ';
            for c in chars.by_ref() {
                if c == '\n' {
                    line += 1;
                }
                if prev == '*' && c == '/' {
                    break;
                }
                prev = c;
            }
            space(&mut out, &mut lines, line);
        } else if sql && c == '-' && chars.peek() == Some(&'-') {
            for c in chars.by_ref() {
                if c == '\n' {
                    line += 1;
                    break;
                }
            }
            space(&mut out, &mut lines, line);
        } else if c.is_whitespace() {
            space(&mut out, &mut lines, line);
            if c == '\n' {
                line += 1;
            }
        } else {
            out.extend(c.to_uppercase());
            while lines.len() < out.len() {
                lines.push(line);
            }
        }
    }
    (out, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documentation_saying_rename_or_truncate_is_not_ddl_but_drop_table_is() {
        let doc = "# Changes\nRename the helper to `parse_cart`.\nTruncate long names in logs.\n";
        assert!(find("README.md", doc).is_empty());
        assert!(find("docs/notes.txt", doc).is_empty());
        // The same lines in code are statements (a heredoc of SQL, say).
        assert!(!find("scripts/fix.sh", doc).is_empty());
        assert_eq!(
            find("docs/runbook.md", "Then DROP TABLE carts_old;\n")
                .into_keys()
                .collect::<Vec<_>>(),
            ["DROP TABLE"]
        );
    }

    /// The phrases found in `text` (of `path`), with their lines.
    fn found(path: &str, text: &str) -> Vec<(&'static str, Vec<usize>)> {
        find(path, text).into_iter().collect()
    }

    #[test]
    fn schema_changes_beyond_tables_and_columns_are_ddl() {
        let sql = [
            "-- clean up",
            "DROP SCHEMA legacy CASCADE;",
            "truncate table orders;",
            "TRUNCATE",
            "  audit_log;",
            "TRUNCATE\"Users\";",
            "alter index i_a rename to i_b;",
            "RENAME TABLE a TO b;",
            "Comment /* why */ On column orders.note IS 'x';",
            "EXEC sp_rename 'a.b', 'c';",
        ]
        .join("\n");
        assert_eq!(
            found("db/cleanup.sql", &sql),
            [
                ("COMMENT ON", vec![9]),
                ("DROP SCHEMA", vec![2]),
                ("RENAME", vec![7, 8]),
                ("SP_RENAME", vec![10]),
                ("TRUNCATE", vec![4, 6]),
                ("TRUNCATE TABLE", vec![3]),
            ]
        );
    }

    #[test]
    fn ddl_in_code_is_found_where_a_statement_starts() {
        let code = [
            "conn.execute(\"TRUNCATE sessions\")?;",
            "let q = format!(\"DELETE FROM a; truncate {t}\");",
            "db.run(`COMMENT ON TABLE x IS 'y'`);",
            "conn.execute(\"ALTER SCHEMA s RENAME TO t\")?;",
            "psql <<EOF",
            "TRUNCATE users;",
            "EOF",
            "cur.execute(f\"{prefix}TRUNCATE {table}\")",
            "run(\"DO $$ BEGIN IF dry THEN RAISE NOTICE 'x'; ELSE truncate t; END IF; END $$\")",
            "run(\"DO $$ BEGIN IF wet THEN TRUNCATE t; END IF; END $$\")",
        ]
        .join("\n");
        assert_eq!(
            found("src/app.py", &code),
            [
                ("COMMENT ON", vec![3]),
                ("RENAME", vec![4]),
                ("TRUNCATE", vec![1, 2, 6, 8, 9, 10]),
            ]
        );
    }

    #[test]
    fn code_and_prose_that_use_the_same_words_are_not_ddl() {
        let code = [
            "v.truncate(3);",
            "fs::rename(a, b)?;",
            "os.rename(a, b)",
            "#[serde(rename = \"id\")]",
            "#[serde(rename_all = \"camelCase\")]",
            "{\"rename\": true, \"truncate\": 3, \"modes\": ['truncate', 'append']}",
            "// Rename the field before we truncate it.",
            "// Shorten it, then rename; or else truncate the rest.",
            "# see the comment on line 3",
            "let truncated = s.len() > 3; // commentOne",
            "SELECT TRUNCATE(1.5, 0);",
            "run(\"--truncate\", \"-rename\", \"@rename\")",
        ]
        .join("\n");
        assert_eq!(found("src/app.rs", &code), []);
        // In a .sql file a function is still not a statement.
        assert_eq!(
            found("q.sql", "SELECT TRUNCATE(price, 2) FROM renamed;\n"),
            []
        );
    }

    #[test]
    fn the_first_phrase_listed_claims_a_place() {
        assert_eq!(
            found("m.sql", "ALTER TABLE t RENAME COLUMN a TO b;\n"),
            [("ALTER TABLE", vec![1]), ("RENAME COLUMN", vec![1])]
        );
    }
}
