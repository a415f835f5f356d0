//! Follows an application's access log the way `tail -F` does, but exactly and restart-safe.
//!
//! A [`Tailer`] is polled (from a timer, or `spawn_blocking`): each [`Tailer::poll`] hands out
//! the complete lines appended since the last one and returns the [`Position`] after the last of
//! them. The caller persists that position once it has dealt with the lines and hands it back
//! to [`Tailer::new`] after a restart; reading then resumes at that exact byte, so no line is read
//! twice or skipped. (If the caller stops between dealing with the lines and persisting the
//! position, those lines come again: persist in the same transaction as their effects for
//! exactly-once.)
//!
//! What it handles:
//! - **Partial lines.** A last line without its `'\n'` yet is left for a later poll; the
//!   position stays before it.
//! - **Rotation by rename** (logrotate's default, with `create`). When the path names another
//!   file than the one being read, that new file is opened and kept, but the old one stays the
//!   one read until a newer file has data: until then the writer has most likely not reopened
//!   its log and is still appending to the old file (a log renamed and never reopened is
//!   followed for as long as that lasts). Once the writer has moved on, the old file is read to
//!   its end, through the handle kept open (lines appended after the rename are not lost), and
//!   reading switches to the next file from offset 0. A new file rotated away again before it
//!   got data is kept too (up to 4), and read in turn.
//! - **Rotation by copytruncate**: the file becomes shorter than the position (same inode),
//!   or was truncated and written past the position again before a poll saw it short, which
//!   shows as the byte before the position no longer being a `'\n'`. Reading starts again from
//!   offset 0 of the same file.
//! - **A missing file** (not created yet, or deleted and not yet recreated): polls return
//!   nothing and keep trying; a file that appears is read from offset 0. A file deleted while
//!   being read is still read through its handle until a new file with data appears at the path.
//! - **Restart** with a saved position: if the path still names that file (same inode), reading
//!   resumes at the saved offset (from 0 if the file is now shorter: it was truncated). If it
//!   was rotated while guardian was down and `<path>.1` is that file (logrotate's default
//!   naming), `<path>.1` is read from the saved offset to its end first, then the new file.
//! - **Long lines**: a line longer than [`Limits::max_line_bytes`] (1 MiB) is skipped and
//!   counted ([`TailStatus::skipped_long_lines`]); no more than that of a line is ever held in
//!   memory.
//! - **Bounded work**: one poll reads at most [`Limits::max_bytes_per_poll`] bytes and hands out
//!   at most [`Limits::max_lines_per_poll`] lines; the rest waits for the next poll.
//!
//! Lines are handed out without their `'\n'` and without a `'\r'` before it. Bytes that are not
//! UTF-8 become U+FFFD.
//!
//! What is lost, inherently:
//! - copytruncate: lines written between the copy and the truncation. A writer that does not
//!   open its log with `O_APPEND` goes on writing at its old offset after the truncation; the
//!   file then starts with a run of NUL bytes, which comes out as (part of) one garbage line or
//!   a skipped long line.
//! - rename rotation: a file that the path named only between two polls is never seen. With
//!   several writers that reopen at different times, lines appended to the old file after the
//!   switch (once one of them wrote to the new file) are lost. A last line without its `'\n'`
//!   in a file left behind is dropped and counted in [`TailStatus::abandoned_partial_lines`].
//! - restart: if the file of the saved position is neither at the path nor at `<path>.1`
//!   (rotated twice while down, compressed without `delaycompress`, or another naming scheme
//!   such as `dateext`), what was written to it after the saved position is lost, and the file
//!   at the path is read from 0. The same goes for a file that was rotated (`ifempty`) before it
//!   got any line: the position stays on the file before it until a newer file has data, so
//!   after a restart what the writer put in the in-between file before reopening is not found. Files are told apart
//!   by inode only: if the saved file was deleted and its inode reused by the new file, reading
//!   resumes at the saved offset in the new file (caught by the `'\n'` check above in most
//!   cases).
//! - A deleted file stays open (its disk space held) until a new file with data appears at the
//!   path.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where reading stands: the inode of the file being read and the byte offset just after the
/// last line handed out. `file_id` 0 means no file has been seen yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Inode number.
    pub file_id: u64,
    pub offset: u64,
}

/// Bounds on what one [`Tailer`] holds in memory and does per poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A longer line (not counting its `'\n'`) is skipped and counted.
    pub max_line_bytes: usize,
    /// Bytes read per poll at most; at least 1 is read.
    pub max_bytes_per_poll: u64,
    /// Lines handed out per poll at most; at least 1.
    pub max_lines_per_poll: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 1 << 20,
            max_bytes_per_poll: 64 << 20,
            max_lines_per_poll: 200_000,
        }
    }
}

/// What `guardian status` shows of a followed log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailStatus {
    pub path: PathBuf,
    /// What the last poll returned (the saved position until a file is found).
    pub position: Position,
    /// Whether the path named a file at the last poll.
    pub file_exists: bool,
    /// True while reading a file that is no longer at the path (renamed or deleted): the writer
    /// has not written to a newer file yet.
    pub reading_rotated_file: bool,
    /// Lines handed out since this tailer was made.
    pub lines_read_total: u64,
    /// Lines longer than [`Limits::max_line_bytes`], skipped.
    pub skipped_long_lines: u64,
    /// Last lines without a `'\n'` dropped because their file was rotated away or truncated.
    pub abandoned_partial_lines: u64,
    /// Times reading started again from 0 because the file was truncated (copytruncate).
    pub truncations: u64,
    /// Times reading switched to a new file at the path.
    pub rotations: u64,
    /// Bytes of a partial last line read and held, waiting for its `'\n'`.
    pub buffered_bytes: u64,
}

/// Reading the log failed for another reason than the file not existing.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(op: &'static str, path: &Path, source: io::Error) -> TailError {
    TailError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Size of one read.
const CHUNK_BYTES: usize = 64 << 10;
/// Files that appeared at the path after the one being read, still empty, kept open at most.
const MAX_SUCCESSORS: usize = 4;

/// The file being read.
struct OpenFile {
    file: File,
    /// The name it was opened under, for error messages.
    opened_as: PathBuf,
    dev: u64,
    ino: u64,
    /// Just after the last line handed out or skipped: what [`Position::offset`] says.
    offset: u64,
    /// Just after the last byte read: `offset` plus the partial line held (or being skipped).
    read_pos: u64,
}

impl OpenFile {
    fn new(file: File, opened_as: PathBuf, meta: &Metadata, offset: u64) -> OpenFile {
        OpenFile {
            file,
            opened_as,
            dev: meta.dev(),
            ino: meta.ino(),
            offset,
            read_pos: offset,
        }
    }

    fn is(&self, meta: &Metadata) -> bool {
        self.ino == meta.ino() && self.dev == meta.dev()
    }

    /// Whether the byte before `at` is a `'\n'` (false if the file no longer reaches it).
    fn newline_before(&self, at: u64) -> Result<bool, TailError> {
        let mut byte = [0u8];
        loop {
            match self.file.read_at(&mut byte, at - 1) {
                Ok(n) => return Ok(n == 1 && byte[0] == b'\n'),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error("read", &self.opened_as, e)),
            }
        }
    }
}

/// What is left of one poll's work.
struct Budget {
    bytes: u64,
    lines: usize,
}

impl Budget {
    fn spent(&self) -> bool {
        self.bytes == 0 || self.lines == 0
    }
}

/// Follows one log file; see the module documentation.
pub struct Tailer {
    path: PathBuf,
    limits: Limits,
    /// The position handed to `new`, until a file is found to apply it to.
    pending: Option<Position>,
    current: Option<OpenFile>,
    /// Files the path named after `current`, oldest first, none with data yet when last
    /// looked at (once one has data, `current` is read to its end and the next one follows).
    successors: VecDeque<OpenFile>,
    /// The start of a line whose `'\n'` has not been read yet.
    partial: Vec<u8>,
    /// Reading through a line too long to keep, up to its `'\n'`.
    skipping: bool,
    buf: Vec<u8>,
    file_exists: bool,
    reading_rotated_file: bool,
    lines_read_total: u64,
    skipped_long_lines: u64,
    abandoned_partial_lines: u64,
    truncations: u64,
    rotations: u64,
}

impl fmt::Debug for Tailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tailer")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Tailer {
    /// Follows `path`, from `start` (a position a previous poll returned) or, with `None`, from
    /// the beginning of the file. Touches no file until the first poll.
    pub fn new(path: PathBuf, start: Option<Position>) -> Tailer {
        Tailer {
            path,
            limits: Limits::default(),
            pending: start,
            current: None,
            successors: VecDeque::new(),
            partial: Vec::new(),
            skipping: false,
            buf: Vec::new(),
            file_exists: false,
            reading_rotated_file: false,
            lines_read_total: 0,
            skipped_long_lines: 0,
            abandoned_partial_lines: 0,
            truncations: 0,
            rotations: 0,
        }
    }

    /// The same tailer with other limits.
    pub fn with_limits(mut self, limits: Limits) -> Tailer {
        self.limits = limits;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends to `out` the complete lines written since the last poll (up to the per-poll
    /// limits) and returns the position after the last of them. Never blocks waiting for data.
    ///
    /// On error nothing was appended to `out`; polling again retries. (An error after some
    /// lines were read this poll ends the poll early with those lines; the next poll meets the
    /// error again if it lasts.)
    pub fn poll(&mut self, out: &mut Vec<String>) -> Result<Position, TailError> {
        let before = out.len();
        let mut budget = Budget {
            bytes: self.limits.max_bytes_per_poll.max(1),
            lines: self.limits.max_lines_per_poll.max(1),
        };
        match self.advance(out, &mut budget) {
            Ok(()) => Ok(self.position()),
            Err(_) if out.len() > before => Ok(self.position()),
            Err(e) => Err(e),
        }
    }

    pub fn status(&self) -> TailStatus {
        TailStatus {
            path: self.path.clone(),
            position: self.position(),
            file_exists: self.file_exists,
            reading_rotated_file: self.reading_rotated_file,
            lines_read_total: self.lines_read_total,
            skipped_long_lines: self.skipped_long_lines,
            abandoned_partial_lines: self.abandoned_partial_lines,
            truncations: self.truncations,
            rotations: self.rotations,
            buffered_bytes: self.partial.len() as u64,
        }
    }

    pub fn position(&self) -> Position {
        match (&self.current, self.pending) {
            (Some(f), _) => Position {
                file_id: f.ino,
                offset: f.offset,
            },
            (None, Some(p)) => p,
            (None, None) => Position::default(),
        }
    }

    fn advance(&mut self, out: &mut Vec<String>, budget: &mut Budget) -> Result<(), TailError> {
        if self.current.is_none() && !self.open_first()? {
            return Ok(());
        }
        for _ in 0..MAX_SUCCESSORS + 2 {
            if !self.read_to_end(out, budget)? {
                return Ok(());
            }
            self.look_at_path()?;
            // Until a newer file has data, the writer may still be writing to this one (it
            // has not reopened its log yet).
            if !self.successor_has_data()? {
                return Ok(());
            }
            // The writer has moved on, so what it wrote here is all here now: read it, then
            // switch.
            if !self.read_to_end(out, budget)? {
                return Ok(());
            }
            let Some(next) = self.successors.pop_front() else {
                return Ok(());
            };
            self.abandon_partial();
            self.current = Some(next);
            self.rotations += 1;
        }
        Ok(())
    }

    /// Notes what the path names now: nothing, the file being read, or a new file (kept open
    /// as a successor, to be read once the writer has moved to it).
    fn look_at_path(&mut self) -> Result<(), TailError> {
        let at_path = match fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.file_exists = false;
                self.reading_rotated_file = self.current.is_some();
                return Ok(());
            }
            Err(e) => return Err(io_error("stat", &self.path, e)),
        };
        self.file_exists = true;
        self.reading_rotated_file = !self.current.as_ref().is_some_and(|f| f.is(&at_path));
        if self.is_known(&at_path) {
            return Ok(());
        }
        let Some((file, meta)) = open_existing(&self.path)? else {
            self.file_exists = false;
            return Ok(());
        };
        if !self.is_known(&meta) {
            self.push_successor(OpenFile::new(file, self.path.clone(), &meta, 0));
        }
        Ok(())
    }

    fn is_known(&self, meta: &Metadata) -> bool {
        self.current
            .iter()
            .chain(&self.successors)
            .any(|f| f.is(meta))
    }

    fn push_successor(&mut self, file: OpenFile) {
        if self.successors.len() == MAX_SUCCESSORS {
            self.successors.pop_front();
        }
        self.successors.push_back(file);
    }

    fn successor_has_data(&self) -> Result<bool, TailError> {
        for f in &self.successors {
            let meta = f
                .file
                .metadata()
                .map_err(|e| io_error("stat", &f.opened_as, e))?;
            if meta.len() > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Opens the file to read first, applying the start position. False if there is none yet.
    fn open_first(&mut self) -> Result<bool, TailError> {
        let mut at_path = open_existing(&self.path)?;
        self.file_exists = at_path.is_some();
        if let Some(start) = self.pending.filter(|p| p.file_id != 0) {
            at_path = match at_path {
                Some((file, meta)) if meta.ino() == start.file_id => {
                    self.resume(file, self.path.clone(), &meta, start.offset);
                    return Ok(true);
                }
                other => other,
            };
            // Rotated while we were down: logrotate's first rotated name.
            let rotated = rotated_path(&self.path);
            if let Some((file, meta)) = open_existing(&rotated)? {
                if meta.ino() == start.file_id {
                    self.resume(file, rotated, &meta, start.offset);
                    self.reading_rotated_file = true;
                    return Ok(true);
                }
            }
            if at_path.is_none() {
                return Ok(false);
            }
        }
        let Some((file, meta)) = at_path else {
            return Ok(false);
        };
        self.pending = None;
        self.current = Some(OpenFile::new(file, self.path.clone(), &meta, 0));
        Ok(true)
    }

    fn resume(&mut self, file: File, opened_as: PathBuf, meta: &Metadata, offset: u64) {
        let offset = if meta.len() < offset {
            self.truncations += 1;
            0
        } else {
            offset
        };
        self.pending = None;
        self.current = Some(OpenFile::new(file, opened_as, meta, offset));
    }

    /// Drops a partial last line that will never be completed.
    fn abandon_partial(&mut self) {
        if !self.partial.is_empty() || self.skipping {
            self.abandoned_partial_lines += 1;
        }
        self.partial.clear();
        self.skipping = false;
    }

    /// Reads the current file to its end, handing out complete lines. False if the budget ran
    /// out first.
    fn read_to_end(
        &mut self,
        out: &mut Vec<String>,
        budget: &mut Budget,
    ) -> Result<bool, TailError> {
        let Some(current) = self.current.as_mut() else {
            return Ok(true);
        };
        let len = current
            .file
            .metadata()
            .map_err(|e| io_error("stat", &current.opened_as, e))?
            .len();
        let truncated = len < current.read_pos
            || (len > current.read_pos
                && current.offset > 0
                && !current.newline_before(current.offset)?);
        if truncated {
            if !self.partial.is_empty() || self.skipping {
                self.abandoned_partial_lines += 1;
            }
            self.partial.clear();
            self.skipping = false;
            current.offset = 0;
            current.read_pos = 0;
            self.truncations += 1;
        }
        if self.buf.is_empty() {
            self.buf = vec![0; CHUNK_BYTES];
        }
        let max_line = self.limits.max_line_bytes;
        loop {
            if budget.spent() {
                return Ok(false);
            }
            let want = self
                .buf
                .len()
                .min(usize::try_from(budget.bytes).unwrap_or(usize::MAX));
            let n = loop {
                match current
                    .file
                    .read_at(&mut self.buf[..want], current.read_pos)
                {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_error("read", &current.opened_as, e)),
                }
            };
            if n == 0 {
                return Ok(true);
            }
            budget.bytes -= n as u64;
            let base = current.read_pos;
            let chunk = &self.buf[..n];
            let mut start = 0;
            while let Some(i) = chunk[start..].iter().position(|&b| b == b'\n') {
                let line = &chunk[start..start + i];
                if self.skipping || self.partial.len() + line.len() > max_line {
                    self.skipped_long_lines += 1;
                    self.skipping = false;
                } else if self.partial.is_empty() {
                    out.push(to_string(line));
                    self.lines_read_total += 1;
                    budget.lines -= 1;
                } else {
                    self.partial.extend_from_slice(line);
                    out.push(to_string(&self.partial));
                    self.lines_read_total += 1;
                    budget.lines -= 1;
                }
                self.partial.clear();
                start += i + 1;
                current.offset = base + start as u64;
                if budget.lines == 0 {
                    // The rest of the chunk is read again next poll.
                    current.read_pos = current.offset;
                    return Ok(false);
                }
            }
            let rest = &chunk[start..];
            if !self.skipping {
                if self.partial.len() + rest.len() > max_line {
                    self.partial.clear();
                    self.skipping = true;
                } else {
                    self.partial.extend_from_slice(rest);
                }
            }
            current.read_pos = base + n as u64;
        }
    }
}

/// `<path>.1`.
fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The file at `path` and what it is, or `None` if there is none.
fn open_existing(path: &Path) -> Result<Option<(File, Metadata)>, TailError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("open", path, e)),
    };
    let meta = file.metadata().map_err(|e| io_error("stat", path, e))?;
    Ok(Some((file, meta)))
}

fn to_string(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    fn append(path: &Path, text: &[u8]) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text).unwrap();
    }

    fn poll(t: &mut Tailer) -> Vec<String> {
        let mut out = Vec::new();
        t.poll(&mut out).unwrap();
        out
    }

    fn ino(path: &Path) -> u64 {
        fs::metadata(path).unwrap().ino()
    }

    /// Polls until a poll makes no progress; returns every line.
    fn drain(t: &mut Tailer) -> Vec<String> {
        let mut all = Vec::new();
        loop {
            let before = (t.position(), t.current.as_ref().map(|f| f.read_pos));
            let mut out = Vec::new();
            t.poll(&mut out).unwrap();
            let after = (t.position(), t.current.as_ref().map(|f| f.read_pos));
            if out.is_empty() && before == after {
                return all;
            }
            all.extend(out);
        }
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        (dir, path)
    }

    #[test]
    fn appends_are_read_exactly_once() {
        let (_dir, path) = setup();
        append(&path, b"history\n");
        let mut t = Tailer::new(path.clone(), None);
        assert_eq!(poll(&mut t), ["history"]);
        assert!(poll(&mut t).is_empty());
        append(&path, b"a\nb\n");
        assert_eq!(poll(&mut t), ["a", "b"]);
        append(&path, b"c\n");
        assert_eq!(poll(&mut t), ["c"]);
        assert!(poll(&mut t).is_empty());
        let status = t.status();
        assert_eq!(status.lines_read_total, 4);
        assert_eq!(
            status.position,
            Position {
                file_id: ino(&path),
                offset: 14
            }
        );
        assert!(status.file_exists);
    }

    #[test]
    fn a_partial_line_waits_for_its_newline() {
        let (_dir, path) = setup();
        let mut t = Tailer::new(path.clone(), None);
        append(&path, b"one\ntw");
        let mut out = Vec::new();
        let pos = t.poll(&mut out).unwrap();
        assert_eq!(out, ["one"]);
        assert_eq!(pos.offset, 4);
        assert_eq!(t.status().buffered_bytes, 2);
        append(&path, b"o");
        let mut out = Vec::new();
        assert_eq!(t.poll(&mut out).unwrap().offset, 4);
        assert!(out.is_empty());
        append(&path, b"\nthree\n");
        assert_eq!(poll(&mut t), ["two", "three"]);
        assert_eq!(t.status().position.offset, 14);
        // A restart while a line is partial reads the whole line once it is complete.
        append(&path, b"fo");
        assert!(poll(&mut t).is_empty());
        let mut t = Tailer::new(path.clone(), Some(t.status().position));
        append(&path, b"ur\n");
        assert_eq!(poll(&mut t), ["four"]);
    }

    #[test]
    fn crlf_is_stripped() {
        let (_dir, path) = setup();
        append(&path, b"a\r\nb\r\r\n\r\n\nc\rd\n");
        let mut t = Tailer::new(path, None);
        assert_eq!(poll(&mut t), ["a", "b\r", "", "", "c\rd"]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let (_dir, path) = setup();
        append(&path, b"ok\n\xff\xfe\nafter\n");
        let mut t = Tailer::new(path, None);
        assert_eq!(poll(&mut t), ["ok", "\u{fffd}\u{fffd}", "after"]);
    }

    #[test]
    fn rename_rotation_drains_the_old_file_then_reads_the_new_one() {
        let (dir, path) = setup();
        let rotated = dir.path().join("access.log.1");
        append(&path, b"old 1\n");
        let mut t = Tailer::new(path.clone(), None);
        assert_eq!(poll(&mut t), ["old 1"]);
        // The writer keeps its handle across the rename.
        let mut writer = OpenOptions::new().append(true).open(&path).unwrap();
        writer.write_all(b"old 2\n").unwrap();
        fs::rename(&path, &rotated).unwrap();
        writer.write_all(b"old 3\n").unwrap();
        // logrotate's `create`: the new file exists, empty, before the writer reopens.
        File::create(&path).unwrap();
        assert_eq!(poll(&mut t), ["old 2", "old 3"]);
        assert!(t.status().reading_rotated_file);
        assert_eq!(t.status().position.file_id, ino(&rotated));
        // Still writing to the old file: still read.
        writer.write_all(b"old 4\nold 5 partial").unwrap();
        assert_eq!(poll(&mut t), ["old 4"]);
        // The writer reopens, finishes nothing in the old file and writes to the new one.
        writer.write_all(b"\n").unwrap();
        drop(writer);
        append(&path, b"new 1\nnew 2\n");
        let mut out = Vec::new();
        let pos = t.poll(&mut out).unwrap();
        assert_eq!(out, ["old 5 partial", "new 1", "new 2"]);
        assert_eq!(
            pos,
            Position {
                file_id: ino(&path),
                offset: 12
            }
        );
        let status = t.status();
        assert_eq!(status.rotations, 1);
        assert!(!status.reading_rotated_file);
        assert_eq!(status.lines_read_total, 7);
        append(&path, b"new 3\n");
        assert_eq!(poll(&mut t), ["new 3"]);
    }

    #[test]
    fn rotation_with_the_new_file_already_written_switches_in_one_poll() {
        let (dir, path) = setup();
        append(&path, b"a\n");
        let mut t = Tailer::new(path.clone(), None);
        assert_eq!(poll(&mut t), ["a"]);
        append(&path, b"b\nunfinished");
        fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        append(&path, b"c\n");
        assert_eq!(poll(&mut t), ["b", "c"]);
        let status = t.status();
        assert_eq!(status.abandoned_partial_lines, 1);
        assert_eq!(status.buffered_bytes, 0);
    }

    #[test]
    fn a_new_file_rotated_away_before_it_had_data_is_still_read() {
        let (dir, path) = setup();
        let (r1, r2) = (
            dir.path().join("access.log.1"),
            dir.path().join("access.log.2"),
        );
        let mut w0 = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        w0.write_all(b"a\n").unwrap();
        let mut t = Tailer::new(path.clone(), None);
        assert_eq!(poll(&mut t), ["a"]);
        fs::rename(&path, &r1).unwrap();
        File::create(&path).unwrap();
        w0.write_all(b"b\n").unwrap();
        let mut w1 = OpenOptions::new().append(true).open(&path).unwrap();
        assert_eq!(poll(&mut t), ["b"]);
        // Rotated again (`ifempty`) before the writer wrote to the second file.
        fs::rename(&r1, &r2).unwrap();
        fs::rename(&path, &r1).unwrap();
        File::create(&path).unwrap();
        assert!(poll(&mut t).is_empty());
        w1.write_all(b"c\n").unwrap();
        let mut w2 = OpenOptions::new().append(true).open(&path).unwrap();
        w2.write_all(b"d\n").unwrap();
        assert_eq!(poll(&mut t), ["c", "d"]);
        let status = t.status();
        assert_eq!(status.rotations, 2);
        assert_eq!(status.position.file_id, ino(&path));
    }

    #[test]
    fn copytruncate_starts_again_at_zero() {
        let (dir, path) = setup();
        append(&path, b"one\ntwo\n");
        let mut t = Tailer::new(path.clone(), None);
        assert_eq!(poll(&mut t), ["one", "two"]);
        let before = ino(&path);
        fs::copy(&path, dir.path().join("access.log.1")).unwrap();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&path, b"x\n");
        assert_eq!(poll(&mut t), ["x"]);
        assert_eq!(ino(&path), before);
        assert_eq!(t.status().truncations, 1);
        assert_eq!(t.status().position.offset, 2);
        append(&path, b"y\n");
        assert_eq!(poll(&mut t), ["y"]);
    }

    #[test]
    fn a_truncation_written_past_the_position_before_a_poll_is_caught() {
        let (_dir, path) = setup();
        append(&path, b"aaaa\n");
        let mut t = Tailer::new(path.clone(), None);
        assert_eq!(poll(&mut t), ["aaaa"]);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&path, b"bbbbbbbb\nc\n");
        assert_eq!(poll(&mut t), ["bbbbbbbb", "c"]);
        assert_eq!(t.status().truncations, 1);
    }

    #[test]
    fn a_missing_file_is_read_when_it_appears() {
        let (_dir, path) = setup();
        let mut t = Tailer::new(path.clone(), None);
        let mut out = Vec::new();
        assert_eq!(t.poll(&mut out).unwrap(), Position::default());
        assert!(out.is_empty());
        assert!(!t.status().file_exists);
        append(&path, b"first\n");
        assert_eq!(poll(&mut t), ["first"]);
        assert!(t.status().file_exists);
        // Deleted, then created again.
        fs::remove_file(&path).unwrap();
        assert!(poll(&mut t).is_empty());
        assert!(!t.status().file_exists);
        append(&path, b"second\n");
        assert_eq!(poll(&mut t), ["second"]);
        assert_eq!(t.status().rotations, 1);
    }

    #[test]
    fn resume_from_a_saved_position_reads_nothing_twice() {
        let (_dir, path) = setup();
        append(&path, b"1\n2\n");
        let mut t = Tailer::new(path.clone(), None);
        let mut out = Vec::new();
        let saved = t.poll(&mut out).unwrap();
        assert_eq!(out, ["1", "2"]);
        drop(t);
        append(&path, b"3\n");
        let mut t = Tailer::new(path.clone(), Some(saved));
        assert_eq!(t.status().position, saved);
        assert_eq!(poll(&mut t), ["3"]);
        // The saved position survives JSON.
        let json = serde_json::to_string(&t.status().position).unwrap();
        let saved: Position = serde_json::from_str(&json).unwrap();
        let mut t = Tailer::new(path.clone(), Some(saved));
        assert!(poll(&mut t).is_empty());
    }

    #[test]
    fn resume_after_a_truncation_during_downtime_starts_at_zero() {
        let (_dir, path) = setup();
        append(&path, b"long line before\n");
        let mut t = Tailer::new(path.clone(), None);
        let mut out = Vec::new();
        let saved = t.poll(&mut out).unwrap();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&path, b"new\n");
        let mut t = Tailer::new(path.clone(), Some(saved));
        assert_eq!(poll(&mut t), ["new"]);
        assert_eq!(t.status().truncations, 1);
    }

    #[test]
    fn resume_after_a_rotation_during_downtime_drains_dot_1_first() {
        let (dir, path) = setup();
        let rotated = dir.path().join("access.log.1");
        append(&path, b"seen\n");
        let mut t = Tailer::new(path.clone(), None);
        let mut out = Vec::new();
        let saved = t.poll(&mut out).unwrap();
        assert_eq!(out, ["seen"]);
        drop(t);
        // While guardian is down: more lines, rotation, lines in the new file.
        append(&path, b"unseen 1\nunseen 2\n");
        fs::rename(&path, &rotated).unwrap();
        append(&path, b"new 1\n");
        let mut t = Tailer::new(path.clone(), Some(saved));
        let mut out = Vec::new();
        let pos = t.poll(&mut out).unwrap();
        assert_eq!(out, ["unseen 1", "unseen 2", "new 1"]);
        assert_eq!(
            pos,
            Position {
                file_id: ino(&path),
                offset: 6
            }
        );
    }

    #[test]
    fn resume_in_dot_1_before_the_new_file_exists() {
        let (dir, path) = setup();
        let rotated = dir.path().join("access.log.1");
        append(&path, b"seen\nunseen\n");
        let saved = Position {
            file_id: ino(&path),
            offset: 5,
        };
        fs::rename(&path, &rotated).unwrap();
        let mut t = Tailer::new(path.clone(), Some(saved));
        assert_eq!(poll(&mut t), ["unseen"]);
        assert!(!t.status().file_exists);
        assert!(t.status().reading_rotated_file);
        append(&path, b"new\n");
        assert_eq!(poll(&mut t), ["new"]);
    }

    #[test]
    fn resume_after_a_rotation_without_dot_1_reads_the_new_file_from_zero() {
        let (dir, path) = setup();
        append(&path, b"seen\nlost\n");
        let saved = Position {
            file_id: ino(&path),
            offset: 5,
        };
        fs::rename(&path, dir.path().join("access.log-20240101")).unwrap();
        append(&path, b"new\n");
        let mut t = Tailer::new(path.clone(), Some(saved));
        assert_eq!(poll(&mut t), ["new"]);
    }

    #[test]
    fn resume_with_the_file_missing_waits_for_it() {
        let (_dir, path) = setup();
        let saved = Position {
            file_id: 123_456_789,
            offset: 40,
        };
        let mut t = Tailer::new(path.clone(), Some(saved));
        let mut out = Vec::new();
        assert_eq!(t.poll(&mut out).unwrap(), saved);
        append(&path, b"a\n");
        assert_eq!(poll(&mut t), ["a"]);
    }

    #[test]
    fn long_lines_are_skipped_and_counted() {
        let (_dir, path) = setup();
        let max = Limits::default().max_line_bytes;
        let mut t = Tailer::new(path.clone(), None);
        append(&path, b"before\n");
        let exactly_max = vec![b'x'; max];
        append(&path, &exactly_max);
        append(&path, b"\n");
        assert_eq!(poll(&mut t), vec!["before".to_owned(), "x".repeat(max)]);
        // One byte too long, written in pieces across polls: never held beyond the limit.
        let piece = vec![b'y'; max / 4];
        for _ in 0..4 {
            append(&path, &piece);
            assert!(poll(&mut t).is_empty());
            assert!(t.status().buffered_bytes <= max as u64);
        }
        append(&path, b"y");
        assert!(poll(&mut t).is_empty());
        assert_eq!(t.status().buffered_bytes, 0);
        append(&path, b"yyy\nafter\n");
        assert_eq!(poll(&mut t), ["after"]);
        // A long line inside one read.
        let mut text = b"a\n".to_vec();
        text.extend(vec![b'z'; max + 10]);
        text.extend_from_slice(b"\r\nb\n");
        append(&path, &text);
        assert_eq!(poll(&mut t), ["a", "b"]);
        let status = t.status();
        assert_eq!(status.skipped_long_lines, 2);
        assert_eq!(status.position.offset, fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn work_per_poll_is_bounded() {
        let (_dir, path) = setup();
        let text: String = (0..10).map(|i| format!("line {i}\n")).collect();
        append(&path, text.as_bytes());
        let mut t = Tailer::new(path.clone(), None).with_limits(Limits {
            max_lines_per_poll: 3,
            ..Limits::default()
        });
        assert_eq!(poll(&mut t), ["line 0", "line 1", "line 2"]);
        assert_eq!(t.status().position.offset, 21);
        assert_eq!(poll(&mut t).len(), 3);
        assert_eq!(poll(&mut t).len(), 3);
        assert_eq!(poll(&mut t), ["line 9"]);
        let mut t = Tailer::new(path.clone(), None).with_limits(Limits {
            max_bytes_per_poll: 10,
            ..Limits::default()
        });
        assert_eq!(poll(&mut t), ["line 0"]);
        assert_eq!(poll(&mut t), ["line 1"]);
        assert_eq!(t.status().buffered_bytes, 6);
        assert_eq!(drain(&mut t).len(), 8);
    }

    #[test]
    fn io_errors_name_the_path() {
        let (dir, _path) = setup();
        let mut t = Tailer::new(dir.path().to_owned(), None);
        let mut out = Vec::new();
        let err = t.poll(&mut out).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(message.starts_with("cannot read"), "{message}");
    }

    /// Splits `text` into its complete lines, as the tailer hands them out.
    fn complete_lines(text: &[u8], max_line: usize) -> (Vec<String>, u64) {
        let mut lines = Vec::new();
        let mut skipped = 0;
        let mut parts: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        parts.pop(); // After the last '\n': partial or empty.
        for part in parts {
            if part.len() > max_line {
                skipped += 1;
            } else {
                lines.push(to_string(part));
            }
        }
        (lines, skipped)
    }

    fn text_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                4 => Just(b'a'),
                2 => Just(b'\n'),
                1 => Just(b'\r'),
                1 => Just(0xc3u8), // half of a two-byte UTF-8 character
                1 => Just(0xa9u8),
            ],
            0..400,
        )
    }

    proptest! {
        #[test]
        fn polled_lines_are_the_written_lines(
            text in text_strategy(),
            cuts in prop::collection::vec(0usize..400, 0..20),
        ) {
            let (_dir, path) = setup();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            cuts.push(0);
            cuts.push(text.len());
            cuts.sort_unstable();
            let mut t = Tailer::new(path.clone(), None);
            let mut got = Vec::new();
            for w in cuts.windows(2) {
                append(&path, &text[w[0]..w[1]]);
                t.poll(&mut got).unwrap();
            }
            let (want, _) = complete_lines(&text, usize::MAX);
            prop_assert_eq!(got, want);
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Append(Vec<u8>),
        Poll,
        Restart,
        /// Unless empty: renamed to `.1`, a new empty file created, the writer still on the old
        /// one.
        Rotate,
        /// The writer reopens the log, if it was rotated.
        Reopen,
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => text_strategy().prop_map(|mut t| { t.truncate(40); Op::Append(t) }),
            4 => Just(Op::Poll),
            1 => Just(Op::Restart),
            1 => Just(Op::Rotate),
            1 => Just(Op::Reopen),
        ]
    }

    proptest! {
        /// Appends, polls, restarts from the last returned position and rename rotations, with
        /// tiny limits: every complete line comes out once, in order. (A rotated file's last
        /// partial line is lost; at most one rotation happens between polls that catch up.)
        #[test]
        fn restarts_and_rotations_lose_and_repeat_nothing(
            ops in prop::collection::vec(op_strategy(), 0..60),
            max_bytes in 1u64..30,
            max_lines in 1usize..4,
            max_line in 1usize..12,
        ) {
            let (dir, path) = setup();
            let rotated = dir.path().join("access.log.1");
            let limits = Limits { max_line_bytes: max_line, max_bytes_per_poll: max_bytes, max_lines_per_poll: max_lines };
            let mut writer = OpenOptions::new().create(true).append(true).open(&path).unwrap();
            let mut files: Vec<Vec<u8>> = vec![Vec::new()];
            let mut t = Tailer::new(path.clone(), None).with_limits(limits);
            let mut got = Vec::new();
            // The first file is known to the tailer before anything rotates it away.
            let mut saved = Some(t.poll(&mut got).unwrap());
            let mut writer_on_rotated = false;
            let mut rotated_since_caught_up = false;
            for op in ops {
                match op {
                    Op::Append(text) => {
                        writer.write_all(&text).unwrap();
                        files.last_mut().unwrap().extend_from_slice(&text);
                    }
                    Op::Poll => saved = Some(t.poll(&mut got).unwrap()),
                    Op::Restart => t = Tailer::new(path.clone(), saved).with_limits(limits),
                    Op::Rotate => {
                        if writer_on_rotated {
                            // logrotate's postrotate has made the writer reopen.
                            writer = OpenOptions::new().append(true).open(&path).unwrap();
                            files.push(Vec::new());
                            writer_on_rotated = false;
                        }
                        // logrotate's `notifempty`. (With `ifempty`, a file rotated before it
                        // was ever written to holds the position back on the file before it,
                        // and a restart after a second rotation cannot find that one.)
                        if files.last().unwrap().is_empty() {
                            continue;
                        }
                        if rotated_since_caught_up {
                            got.extend(drain(&mut t));
                            saved = Some(t.position());
                        }
                        fs::rename(&path, &rotated).unwrap();
                        File::create(&path).unwrap();
                        rotated_since_caught_up = true;
                        writer_on_rotated = true;
                    }
                    Op::Reopen => {
                        if writer_on_rotated {
                            writer = OpenOptions::new().append(true).open(&path).unwrap();
                            files.push(Vec::new());
                            writer_on_rotated = false;
                        }
                    }
                }
            }
            got.extend(drain(&mut t));
            let mut want = Vec::new();
            let mut skipped = 0;
            for text in &files {
                let (lines, s) = complete_lines(text, max_line);
                want.extend(lines);
                skipped += s;
            }
            prop_assert_eq!(&got, &want);
            // Restarts can count a skipped line again; never fewer.
            prop_assert!(t.status().skipped_long_lines <= skipped);
        }
    }
}
