//! `GIT binary patch` blocks: git's base85 lines decoded, and what each block inflates to (its
//! declared size, and the size of the file a delta makes) bounded before git inflates anything.

use super::parser::Parser;
use super::{err, quote, DiffError};

/// The most bytes one block of a `GIT binary patch` may inflate to (its `literal`/`delta`
/// size, and a delta's result). `git apply` inflates every block of a patch into memory
/// before it applies any, and deflate shrinks a run of zeros a thousandfold: a 519 KB patch
/// can declare 395 MiB. A file guardian judges is far smaller (see `MAX_BINARY_PATCH_BYTES`).
pub const MAX_BINARY_BYTES: u64 = 16 * 1024 * 1024;
/// The most bytes all the binary blocks of one patch may inflate to, together: the bound
/// on the contents one proposal is judged on (`git::scratch::MAX_JUDGED_BYTES`), so that a
/// patch git would refuse after inflating is refused before git runs.
pub const MAX_BINARY_PATCH_BYTES: u64 = 32 * 1024 * 1024;

impl Parser<'_> {
    /// Reads the base85 blocks of a `GIT binary patch` (forward, then usually reverse) of
    /// the file `name`, refusing a block that would inflate past [`MAX_BINARY_BYTES`] or the
    /// patch's binary blocks past [`MAX_BINARY_PATCH_BYTES`] before git inflates them.
    pub(super) fn binary_patch(&mut self, name: &str) -> Result<(), DiffError> {
        let mut blocks = 0;
        while let Some(line) = self.peek() {
            let no = Self::no(self.at);
            let block = match line.split_once(' ') {
                Some(("literal", size)) => Some((false, size)),
                Some(("delta", size)) => Some((true, size)),
                _ => None,
            };
            let (delta, size) = match block {
                Some((delta, size))
                    if size.bytes().all(|b| b.is_ascii_digit()) && !size.is_empty() =>
                {
                    // Digits too many for a u64 are too many bytes, too.
                    (delta, size.parse::<u64>().unwrap_or(u64::MAX))
                }
                _ if blocks > 0 => break,
                _ => {
                    return Err(err(
                        no,
                        format!("{} is not `literal N` or `delta N`", quote(line)),
                    ))
                }
            };
            self.at += 1;
            blocks += 1;
            let mut data = Vec::new();
            while let Some(text) = self.peek() {
                if text.is_empty() {
                    self.at += 1;
                    break;
                }
                base85_line(text, &mut data).map_err(|why| {
                    err(
                        Self::no(self.at),
                        format!(
                            "{} is not base85 data of a binary patch: {why}",
                            quote(text)
                        ),
                    )
                })?;
                self.at += 1;
            }
            let mut inflated = size;
            if delta && size <= MAX_BINARY_BYTES {
                let result = delta_result_size(&data).ok_or_else(|| {
                    err(
                        no,
                        format!("the binary delta of {name} does not start with its sizes"),
                    )
                })?;
                if result > MAX_BINARY_BYTES {
                    return Err(err(
                        no,
                        format!(
                            "the binary delta of {name} makes a file of {result} bytes; at most \
                             {MAX_BINARY_BYTES} are accepted"
                        ),
                    ));
                }
                inflated = inflated.saturating_add(result);
            }
            if size > MAX_BINARY_BYTES {
                return Err(err(
                    no,
                    format!(
                        "the binary patch of {name} inflates to {size} bytes; at most \
                         {MAX_BINARY_BYTES} are accepted"
                    ),
                ));
            }
            self.binary_bytes = self.binary_bytes.saturating_add(inflated);
            if self.binary_bytes > MAX_BINARY_PATCH_BYTES {
                return Err(err(
                    no,
                    format!(
                        "the binary patches up to {name} inflate to {} bytes; at most \
                         {MAX_BINARY_PATCH_BYTES} are accepted in one patch",
                        self.binary_bytes
                    ),
                ));
            }
        }
        if blocks == 0 {
            return Err(err(Self::no(self.at), "a binary patch without data"));
        }
        Ok(())
    }
}

/// git's base85 alphabet, in value order.
const BASE85: &[u8; 85] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";

/// Decodes one line of a `GIT binary patch` onto `out`: a length letter (`A`-`Z` for 1-26
/// bytes, `a`-`z` for 27-52), then five base85 characters for each four bytes. Written here
/// because the framing is git's own (no base85 crate reads the length letter), and it is a
/// dozen lines.
fn base85_line(line: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let bytes = line.as_bytes();
    let len = match bytes[0] {
        c @ b'A'..=b'Z' => usize::from(c - b'A') + 1,
        c @ b'a'..=b'z' => usize::from(c - b'a') + 27,
        _ => return Err("the first character is not a length letter".to_owned()),
    };
    let data = &bytes[1..];
    if data.len() != len.div_ceil(4) * 5 {
        return Err(format!(
            "{} characters for {len} bytes, which take {}",
            data.len(),
            len.div_ceil(4) * 5
        ));
    }
    let start = out.len();
    for group in data.chunks(5) {
        let mut value: u64 = 0;
        for &c in group {
            let digit = BASE85
                .iter()
                .position(|&b| b == c)
                .ok_or_else(|| format!("{:?} is not a base85 character", char::from(c)))?;
            value = value * 85 + digit as u64;
        }
        let value = u32::try_from(value).map_err(|_| "a group is out of range".to_owned())?;
        out.extend_from_slice(&value.to_be_bytes());
    }
    out.truncate(start + len);
    Ok(())
}

/// The size of the file a git delta makes: its second header field, read from the first
/// bytes of the zlib stream (each field little-endian base 128: the base's size, then the
/// result's). Only those bytes are inflated. `None` when the stream does not start so.
fn delta_result_size(deflated: &[u8]) -> Option<u64> {
    /// Two fields of at most 10 bytes each.
    const HEADER_BYTES: usize = 20;
    use miniz_oxide::inflate::{decompress_to_vec_zlib_with_limit, TINFLStatus};
    let head = match decompress_to_vec_zlib_with_limit(deflated, HEADER_BYTES) {
        Ok(all) => all,
        // Stopped at the limit: what came out is the stream's start. On any other error the
        // buffer holds filler, not data.
        Err(e) if e.status == TINFLStatus::HasMoreOutput => e.output,
        Err(_) => return None,
    };
    let mut fields = [0u64; 2];
    let mut at = 0;
    for field in &mut fields {
        let mut shift = 0;
        loop {
            let byte = *head.get(at)?;
            at += 1;
            *field |= u64::from(byte & 0x7f).checked_shl(shift)?;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
            if shift >= 64 {
                return None;
            }
        }
    }
    Some(fields[1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::diff::testing::error;
    use crate::trust::diff::{parse, FileStatus};

    /// What `git diff --binary --full-index` wrote for a binary file changed in place (a
    /// delta each way), a new binary file and a text edit (git 2.47.3).
    const BINARY_DIFF: &str = "diff --git a/img.bin b/img.bin
index cd880f980997a372c2e74f3d5638b2787ce760d4..4fce37eb075b5a843b47b1cd71502a373005b1cd 100644
GIT binary patch
delta 21
ccmdlXzC(OM3YUSQk+F%XnYo4K#yl@>07!cV9smFU

delta 21
ccmdlXzC(OM3RhH&UXy@|7RPh;jd@<&08gO?%K!iX

diff --git a/new.bin b/new.bin
new file mode 100644
index 0000000000000000000000000000000000000000..4409b7475379908ba13fced50ac3a5e3073c673c
GIT binary patch
literal 32
PcmZQzWMXCj0UR^{0muLu

literal 0
HcmV?d00001

diff --git a/notes.txt b/notes.txt
index 4cb29ea38f70d7c61b2a3a25b02e3bdf44905402..ddc897f039f57aa91e16efa6dfde386c4255206f 100644
--- a/notes.txt
+++ b/notes.txt
@@ -1,3 +1,3 @@
 one
-two
+TWO
 three
";

    #[test]
    fn a_full_index_binary_diff_reads_as_git_wrote_it() {
        let d = parse(BINARY_DIFF).unwrap();
        let summary: Vec<(&str, FileStatus, bool)> = d
            .files
            .iter()
            .map(|f| (f.path(), f.status, f.binary))
            .collect();
        assert_eq!(
            summary,
            [
                ("img.bin", FileStatus::Modified, true),
                ("new.bin", FileStatus::Added, true),
                ("notes.txt", FileStatus::Modified, false),
            ]
        );
    }

    /// `data` as the lines of one block of a `GIT binary patch`, as git writes them.
    fn base85_lines(data: &[u8]) -> String {
        let mut out = String::new();
        for chunk in data.chunks(52) {
            let len = chunk.len() as u8;
            out.push(char::from(if len <= 26 {
                b'A' + len - 1
            } else {
                b'a' + len - 27
            }));
            for group in chunk.chunks(4) {
                let mut word = [0u8; 4];
                word[..group.len()].copy_from_slice(group);
                let mut value = u32::from_be_bytes(word);
                let mut digits = [0u8; 5];
                for d in digits.iter_mut().rev() {
                    *d = BASE85[(value % 85) as usize];
                    value /= 85;
                }
                out.push_str(std::str::from_utf8(&digits).unwrap());
            }
            out.push('\n');
        }
        out
    }

    /// A new file `path` sent as a binary literal of `contents`.
    fn binary_literal(path: &str, contents: &[u8]) -> String {
        let deflated = miniz_oxide::deflate::compress_to_vec_zlib(contents, 9);
        format!(
            "diff --git a/{path} b/{path}\nnew file mode 100644\nindex 0000000000000000000000000000000000000000..1111111111111111111111111111111111111111\nGIT binary patch\nliteral {}\n{}\nliteral 0\nHcmV?d00001\n\n",
            contents.len(),
            base85_lines(&deflated)
        )
    }

    #[test]
    fn base85_and_delta_headers_read_as_git_wrote_them() {
        let mut out = Vec::new();
        base85_line("JcmZQz1ONa700IC2", &mut out).unwrap();
        assert_eq!(out.len(), 10);
        // The first delta of BINARY_DIFF: a 3000-byte file made from a 3000-byte one.
        let mut delta = Vec::new();
        base85_line("ccmdlXzC(OM3YUSQk+F%XnYo4K#yl@>07!cV9smFU", &mut delta).unwrap();
        assert_eq!(delta_result_size(&delta), Some(3000));
        let data = [7u8; 61];
        let mut round = Vec::new();
        for line in base85_lines(&data).lines() {
            base85_line(line, &mut round).unwrap();
        }
        assert_eq!(round, data);
        assert!(base85_line("Jcm", &mut Vec::new())
            .unwrap_err()
            .contains("take 15"));
        assert!(base85_line("A\"\"\"\"\"", &mut Vec::new())
            .unwrap_err()
            .contains("not a base85 character"));
        assert_eq!(delta_result_size(b"not zlib"), None);
    }

    #[test]
    fn a_binary_patch_that_inflates_past_the_limit_is_refused_before_git_runs() {
        // The zip bomb: 17 MiB of zeros deflate to a few kilobytes.
        let big = vec![0u8; MAX_BINARY_BYTES as usize + 1];
        let patch = binary_literal("assets/zeros.bin", &big);
        assert!(patch.len() < 64 * 1024, "{} bytes", patch.len());
        let e = error(&patch);
        assert_eq!(e.line, 5, "{e}");
        assert!(
            e.to_string().contains(&format!(
                "the binary patch of assets/zeros.bin inflates to {} bytes; at most {MAX_BINARY_BYTES}",
                MAX_BINARY_BYTES + 1
            )),
            "{e}"
        );
        // A block at the limit is read, and three of them are too many for one patch.
        let at_limit = vec![0u8; MAX_BINARY_BYTES as usize];
        assert!(parse(&binary_literal("a.bin", &at_limit)).is_ok());
        let three: String = ["a.bin", "b.bin", "c.bin"]
            .iter()
            .map(|p| binary_literal(p, &at_limit))
            .collect();
        let e = error(&three);
        assert!(
            e.to_string()
                .contains("the binary patches up to c.bin inflate"),
            "{e}"
        );
        // A size no u64 holds is too big, not a panic.
        let e = error(&patch.replace(
            &format!("literal {}", big.len()),
            "literal 99999999999999999999999",
        ));
        assert!(
            e.to_string()
                .contains("inflates to 18446744073709551615 bytes"),
            "{e}"
        );
    }

    #[test]
    fn a_delta_that_makes_a_file_past_the_limit_is_refused() {
        // A delta's own size is small; the file it makes is in its header: base size, then
        // result size, each little-endian base 128, then its copy and insert commands.
        let mut header = Vec::new();
        for mut n in [3000u64, MAX_BINARY_BYTES * 64] {
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    header.push(byte);
                    break;
                }
                header.push(byte | 0x80);
            }
        }
        let deflated = miniz_oxide::deflate::compress_to_vec_zlib(&header, 9);
        let patch = format!(
            "diff --git a/img.bin b/img.bin\nindex cd880f980997a372c2e74f3d5638b2787ce760d4..4fce37eb075b5a843b47b1cd71502a373005b1cd 100644\nGIT binary patch\ndelta {}\n{}\n",
            header.len(),
            base85_lines(&deflated)
        );
        let e = error(&patch);
        assert_eq!(e.line, 4, "{e}");
        assert!(
            e.to_string().contains(&format!(
                "the binary delta of img.bin makes a file of {} bytes",
                MAX_BINARY_BYTES * 64
            )),
            "{e}"
        );
    }
}
