//! The post-mortem's small document model ([`Block`], [`Inline`]) and its two renderers,
//! Markdown and self-contained HTML, so both say the same things and every piece of text that
//! came from outside (a summary written by an agent, a file name, a hook's output) is escaped
//! in exactly one place per format: Markdown backslash-escapes what could start a construct (a
//! heading, a list, HTML, a link) and fences code with more backticks than it contains; HTML
//! and SVG escape `& < > " '`.

use std::fmt::Write as _;

/// A piece of running text.
#[derive(Clone, Debug, PartialEq)]
pub enum Inline {
    /// Text from anywhere; escaped when rendered.
    Text(String),
    Strong(String),
    /// A command, commit or path, shown as code.
    Code(String),
    /// A link; only `http(s)` URLs become links, anything else is shown as code.
    Link {
        text: String,
        url: String,
    },
}

/// A block of the document.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    Heading(u8, Vec<Inline>),
    Paragraph(Vec<Inline>),
    List(Vec<Vec<Inline>>),
    /// Header cells, then rows of cells.
    Table(Vec<String>, Vec<Vec<Vec<Inline>>>),
    /// Preformatted text (commands and their output).
    Code(String),
    /// Where the chart goes.
    Chart,
}

pub fn t(s: impl Into<String>) -> Inline {
    Inline::Text(s.into())
}

pub fn code(s: impl Into<String>) -> Inline {
    Inline::Code(s.into())
}

pub fn strong(s: impl Into<String>) -> Inline {
    Inline::Strong(s.into())
}

pub fn plain_text(inlines: &[Inline]) -> String {
    inlines
        .iter()
        .map(|i| match i {
            Inline::Text(s) | Inline::Strong(s) | Inline::Code(s) => s.as_str(),
            Inline::Link { text, .. } => text.as_str(),
        })
        .collect()
}

/// The document in Markdown (CommonMark with GitHub tables); the chart is named, not embedded.
pub fn markdown(doc: &[Block], change_id: &str) -> String {
    let mut out = String::new();
    for block in doc {
        md_block(&mut out, block, change_id);
    }
    out
}

/// The document as a self-contained HTML page: inline CSS, the chart (`svg`) inline, nothing
/// fetched.
pub fn html(doc: &[Block], svg: &str) -> String {
    html_after(doc, svg, "")
}

/// [`html`] with `before` (markup, not text: the caller's own) ahead of the document, such as
/// the status page's way back.
pub fn html_after(doc: &[Block], svg: &str, before: &str) -> String {
    let title = doc
        .iter()
        .find_map(|b| match b {
            Block::Heading(1, inlines) => Some(plain_text(inlines)),
            _ => None,
        })
        .unwrap_or_default();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{}</title></head>\n<body style=\"{BODY_STYLE}\">\
         <div style=\"max-width:760px\">\n{before}",
        esc(&title)
    );
    for block in doc {
        html_block(&mut out, block, svg);
    }
    out.push_str("</div></body></html>\n");
    out
}

// ---------------------------------------------------------------------------------------------
// Markdown.

/// Characters that could start Markdown syntax anywhere in running text (`_` only at a word
/// edge, `|` only in a table; what matters only at the start of a line is `md_line_start`'s).
const MD_SPECIAL: &str = "\\`*[]<&~";

fn md_text(s: &str, in_table: bool) -> String {
    let chars: Vec<char> = crate::display::line(s).chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        let word = |j: Option<usize>| {
            j.and_then(|j| chars.get(j))
                .is_some_and(|c| c.is_alphanumeric())
        };
        let escape = MD_SPECIAL.contains(c)
            || (c == '|' && in_table)
            || (c == '_' && !(word(i.checked_sub(1)) && word(Some(i + 1))));
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A line of text must not start a block of its own (a list, a heading, a quote...).
fn md_line_start(s: String) -> String {
    let trimmed = s.trim_start();
    let first = trimmed.chars().next();
    let digits = trimmed.chars().take_while(char::is_ascii_digit).count();
    let after_digits = trimmed[digits..].chars().next();
    let leading = s.len() - trimmed.len();
    if matches!(first, Some('-' | '+' | '=' | '>' | '#'))
        || (digits > 0 && matches!(after_digits, Some('.' | ')')))
    {
        let at = leading + if digits > 0 { digits } else { 0 };
        let mut s = s;
        s.insert(at, '\\');
        s
    } else {
        s
    }
}

fn md_code_span(s: &str, in_table: bool) -> String {
    let s = crate::display::line(s).into_owned();
    let s = if in_table { s.replace('|', "\\|") } else { s };
    let fence = "`".repeat(longest_run(&s, '`') + 1);
    if s.starts_with('`') || s.ends_with('`') || s.trim().is_empty() {
        format!("{fence} {s} {fence}")
    } else {
        format!("{fence}{s}{fence}")
    }
}

fn longest_run(s: &str, c: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for x in s.chars() {
        run = if x == c { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

fn safe_url(url: &str) -> Option<&str> {
    let lower = url.trim().to_ascii_lowercase();
    let ok = (lower.starts_with("https://") || lower.starts_with("http://"))
        && !url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>\"'`\\".contains(c));
    ok.then_some(url.trim())
}

fn md_inlines(inlines: &[Inline], in_table: bool) -> String {
    let mut out = String::new();
    for i in inlines {
        match i {
            Inline::Text(s) => out.push_str(&md_text(s, in_table)),
            Inline::Strong(s) => {
                // Markdown's emphasis may not start or end inside whitespace: "**issue **"
                // shows its asterisks. The spaces go outside.
                let inner = s.trim();
                let (before, after) = (
                    &s[..s.len() - s.trim_start().len()],
                    &s[s.trim_end().len()..],
                );
                if inner.is_empty() {
                    out.push_str(&md_text(s, in_table));
                } else {
                    let _ = write!(
                        out,
                        "{}**{}**{}",
                        md_text(before, in_table),
                        md_text(inner, in_table),
                        md_text(after, in_table)
                    );
                }
            }
            Inline::Code(s) => out.push_str(&md_code_span(s, in_table)),
            Inline::Link { text, url } => match safe_url(url) {
                Some(url) => {
                    let url = url.replace('(', "%28").replace(')', "%29");
                    let _ = write!(out, "[{}]({url})", md_text(text, in_table));
                }
                None => out.push_str(&md_code_span(text, in_table)),
            },
        }
    }
    if in_table {
        out
    } else {
        md_line_start(out)
    }
}

fn md_block(out: &mut String, block: &Block, change_id: &str) {
    match block {
        Block::Heading(level, inlines) => {
            let _ = writeln!(
                out,
                "{} {}\n",
                "#".repeat(usize::from(*level).clamp(1, 6)),
                md_inlines(inlines, false)
            );
        }
        Block::Paragraph(inlines) => {
            let _ = writeln!(out, "{}\n", md_inlines(inlines, false));
        }
        Block::List(items) => {
            for item in items {
                let _ = writeln!(out, "- {}", md_inlines(item, false));
            }
            out.push('\n');
        }
        Block::Table(head, rows) => {
            let _ = writeln!(
                out,
                "| {} |",
                head.iter()
                    .map(|h| md_text(h, true))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            let _ = writeln!(out, "|{}", "---|".repeat(head.len()));
            for row in rows {
                let cells: Vec<String> = row.iter().map(|c| md_inlines(c, true)).collect();
                let _ = writeln!(out, "| {} |", cells.join(" | "));
            }
            out.push('\n');
        }
        Block::Code(text) => {
            let text = printable_block(text);
            let fence = "`".repeat(longest_run(&text, '`').max(2) + 1);
            let _ = writeln!(out, "{fence}text\n{}\n{fence}\n", text.trim_end());
        }
        Block::Chart => {
            let _ = writeln!(
                out,
                "The chart of error rate and latency around the change, with the deploy, the \
                 decision and the rollback marked, is in the HTML version (the alert email) and \
                 as SVG: `guardian postmortem {} --svg > chart.svg`.\n",
                md_code_safe_id(change_id)
            );
        }
    }
}

/// A change id is letters, digits and `_`; anything else is dropped from the command shown.
fn md_code_safe_id(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

/// Control and invisible characters (colour codes, `\r`) made visible, lines and tabs kept.
fn printable_block(text: &str) -> String {
    crate::display::block(text).into_owned()
}

// ---------------------------------------------------------------------------------------------
// HTML.

const BODY_STYLE: &str = "margin:0;padding:16px;background:#ffffff;color:#1f2328;\
    font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;font-size:14px;\
    line-height:1.45";
const TABLE_STYLE: &str = "border-collapse:collapse;margin:8px 0 14px 0;font-size:13px";
const CELL_STYLE: &str = "border:1px solid #d0d7de;padding:4px 8px;text-align:left;\
    vertical-align:top";
const PRE_STYLE: &str = "background:#f6f8fa;border:1px solid #d0d7de;padding:8px;\
    font-size:12px;line-height:1.35;overflow-x:auto;white-space:pre-wrap;\
    word-break:break-all";
const CODE_STYLE: &str = "background:#f6f8fa;padding:0 3px;font-size:12px";

/// Escapes text for HTML and SVG (element content and quoted attributes).
/// Control and invisible characters are shown as escapes first (`crate::display`).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in crate::display::block(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html_inlines(inlines: &[Inline]) -> String {
    let mut out = String::new();
    for i in inlines {
        match i {
            Inline::Text(s) => out.push_str(&esc(s)),
            Inline::Strong(s) => {
                let _ = write!(out, "<strong>{}</strong>", esc(s));
            }
            Inline::Code(s) => {
                let _ = write!(out, "<code style=\"{CODE_STYLE}\">{}</code>", esc(s));
            }
            Inline::Link { text, url } => match safe_url(url) {
                Some(url) => {
                    let _ = write!(out, "<a href=\"{}\">{}</a>", esc(url), esc(text));
                }
                None => {
                    let _ = write!(out, "<code style=\"{CODE_STYLE}\">{}</code>", esc(text));
                }
            },
        }
    }
    out
}

fn html_block(out: &mut String, block: &Block, svg: &str) {
    match block {
        Block::Heading(level, inlines) => {
            let level = level.clamp(&1, &6);
            let size = match level {
                1 => "20px",
                2 => "17px",
                _ => "15px",
            };
            let _ = writeln!(
                out,
                "<h{level} style=\"font-size:{size};margin:18px 0 8px 0\">{}</h{level}>",
                html_inlines(inlines)
            );
        }
        Block::Paragraph(inlines) => {
            let _ = writeln!(
                out,
                "<p style=\"margin:8px 0\">{}</p>",
                html_inlines(inlines)
            );
        }
        Block::List(items) => {
            out.push_str("<ul style=\"margin:8px 0;padding-left:22px\">\n");
            for item in items {
                let _ = writeln!(out, "<li>{}</li>", html_inlines(item));
            }
            out.push_str("</ul>\n");
        }
        Block::Table(head, rows) => {
            let _ = write!(out, "<table style=\"{TABLE_STYLE}\"><tr>");
            for h in head {
                let _ = write!(
                    out,
                    "<th style=\"{CELL_STYLE};background:#f6f8fa\">{}</th>",
                    esc(h)
                );
            }
            out.push_str("</tr>\n");
            for row in rows {
                out.push_str("<tr>");
                for cell in row {
                    let _ = write!(
                        out,
                        "<td style=\"{CELL_STYLE}\">{}</td>",
                        html_inlines(cell)
                    );
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</table>\n");
        }
        Block::Code(text) => {
            let _ = writeln!(
                out,
                "<pre style=\"{PRE_STYLE}\">{}</pre>",
                esc(text.trim_end())
            );
        }
        Block::Chart => {
            let _ = writeln!(out, "<div style=\"margin:8px 0\">{svg}</div>");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_escaping_keeps_text_as_text() {
        assert_eq!(
            md_text("a*b_c _d [e](f) <g> #h |i", false),
            "a\\*b_c \\_d \\[e\\](f) \\<g> #h |i"
        );
        assert_eq!(md_text("a|b", true), "a\\|b");
        assert_eq!(md_inlines(&[t("# heading")], false), "\\# heading");
        assert_eq!(md_inlines(&[t("- item")], false), "\\- item");
        assert_eq!(md_inlines(&[t("12. item")], false), "12\\. item");
        assert_eq!(md_inlines(&[t("> quote")], false), "\\> quote");
        assert_eq!(
            md_inlines(&[strong("Sentry issue "), code("42")], false),
            "**Sentry issue** `42`",
            "emphasis may not end in a space"
        );
        assert_eq!(md_code_span("a``b", false), "```a``b```");
        assert_eq!(md_code_span("a|b", true), "`a\\|b`");
        assert_eq!(safe_url("https://x.example/a"), Some("https://x.example/a"));
        assert_eq!(safe_url("javascript:alert(1)"), None);
        assert_eq!(safe_url("https://x.example/\"onmouseover"), None);
        assert_eq!(
            esc("<a href='x'>&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
    }
}
