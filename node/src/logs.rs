//! Container log files (CRI format) with rotation, and reading them back for `kubectl logs`.
//!
//! Layout, as the kubelet's: `<root>/<ns>_<pod>_<uid>/<container>/<restartCount>.log`, one file
//! per container instance. Each record is `<RFC3339Nano> stdout|stderr F|P <content>\n`: `F`
//! ends a line, `P` is a part of a line continued by the next record (a line longer than
//! [`MAX_RECORD`], or the last bytes of a stream that ended without a newline).
//!
//! Rotation: when the current file would pass [`RotationPolicy::max_size`], it is renamed to
//! `<restartCount>.log.<seq>` (seq increasing) and a new one started; at most
//! [`RotationPolicy::max_files`] files are kept, the current one included (kubelet's
//! `containerLogMaxFiles`). The runtime marks an instance finished ([`mark_finished`]) once its
//! process has exited and its [`LogWriter`] is done: that is what ends `kubectl logs -f`.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The kubelet's default `containerLogMaxSize`.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// The kubelet's default `containerLogMaxFiles` (the current file included).
pub const DEFAULT_MAX_FILES: usize = 5;
/// The longest content of one record; longer lines are split into `P` records (containerd's
/// 16 KiB).
pub const MAX_RECORD: usize = 16 * 1024;
/// How often a follower looks for new bytes, a rotation or the end of the instance.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Errors of writing and reading container logs.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("container log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "no previous instance of the container logging in {dir}: it has not been restarted \
         (drop --previous)"
    )]
    NoPrevious { dir: PathBuf },
    #[error("no log for this container instance at {path}: it has not started yet")]
    NotStarted { path: PathBuf },
    #[error("invalid {field} {value:?}: {why}")]
    InvalidOption {
        field: &'static str,
        value: String,
        why: &'static str,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `<root>/<ns>_<pod>_<uid>`: the folder of one pod's logs.
pub fn pod_log_dir(root: &Path, namespace: &str, pod: &str, uid: &str) -> PathBuf {
    root.join(format!("{namespace}_{pod}_{uid}"))
}

/// `<root>/<ns>_<pod>_<uid>/<container>`: the folder of one container's instances.
pub fn container_log_dir(
    root: &Path,
    namespace: &str,
    pod: &str,
    uid: &str,
    container: &str,
) -> PathBuf {
    pod_log_dir(root, namespace, pod, uid).join(container)
}

/// `<container_dir>/<restart_count>.log`: the current file of one container instance.
pub fn instance_log_path(container_dir: &Path, restart_count: u32) -> PathBuf {
    container_dir.join(format!("{restart_count}.log"))
}

/// The marker saying an instance has ended: `<container_dir>/<restart_count>.finished`.
fn finished_marker(log_path: &Path) -> PathBuf {
    log_path.with_extension("finished")
}

/// Marks the instance logging to `log_path` as ended (its process exited and its writer is
/// done): followers drain what is left and stop.
pub fn mark_finished(log_path: &Path) -> Result<(), LogError> {
    let marker = finished_marker(log_path);
    std::fs::write(&marker, b"").map_err(io_err(&marker))
}

/// When to rotate and how many files to keep.
#[derive(Debug, Clone, Copy)]
pub struct RotationPolicy {
    /// Rotate when the current file would grow past this many bytes.
    pub max_size: u64,
    /// Files kept per instance, the current one included (at least 1).
    pub max_files: usize,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

/// Which output a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Rotated files of the instance at `log_path`, oldest first, with their sequence numbers.
async fn rotated_files(log_path: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let Some(dir) = log_path.parent() else {
        return Ok(Vec::new());
    };
    let prefix = format!(
        "{}.",
        log_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let mut out = Vec::new();
    let mut entries = match fs::read_dir(dir).await {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir)(e)),
    };
    while let Some(entry) = entries.next_entry().await.map_err(io_err(dir))? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(seq) = name
            .strip_prefix(&prefix)
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Writes a container instance's stdout and stderr to its log file.
#[derive(Debug)]
pub struct LogWriter;

struct Record {
    /// When the bytes were read from the container (the writer may write them a little later).
    at: Timestamp,
    stream: LogStream,
    /// Content without the trailing newline.
    content: Vec<u8>,
    full: bool,
}

impl LogWriter {
    /// Starts writing `stdout` and `stderr` to `log_path` (folders created) until both end.
    /// The task's result says whether every record was written. Call [`mark_finished`] once
    /// it is done and the process has exited.
    pub fn spawn<O, E>(
        log_path: PathBuf,
        policy: RotationPolicy,
        stdout: Option<O>,
        stderr: Option<E>,
    ) -> JoinHandle<Result<(), LogError>>
    where
        O: AsyncRead + Send + Unpin + 'static,
        E: AsyncRead + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel::<Record>(256);
        if let Some(out) = stdout {
            tokio::spawn(split_lines(out, LogStream::Stdout, tx.clone()));
        }
        if let Some(err) = stderr {
            tokio::spawn(split_lines(err, LogStream::Stderr, tx.clone()));
        }
        drop(tx);
        tokio::spawn(write_records(log_path, policy, rx))
    }
}

/// Cuts a stream into records: one per line, lines longer than [`MAX_RECORD`] in parts.
async fn split_lines<R: AsyncRead + Unpin>(
    mut reader: R,
    stream: LogStream,
    tx: mpsc::Sender<Record>,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, stream = stream.as_str(), "container output ended");
                break;
            }
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = pending.drain(..=pos).collect();
            line.pop();
            while line.len() > MAX_RECORD {
                let rest = line.split_off(MAX_RECORD);
                let part = std::mem::replace(&mut line, rest);
                if send(&tx, stream, part, false).await.is_err() {
                    return;
                }
            }
            if send(&tx, stream, line, true).await.is_err() {
                return;
            }
        }
        while pending.len() > MAX_RECORD {
            let rest = pending.split_off(MAX_RECORD);
            let part = std::mem::replace(&mut pending, rest);
            if send(&tx, stream, part, false).await.is_err() {
                return;
            }
        }
    }
    if !pending.is_empty() {
        // The stream ended inside a line: a partial record, so readers print it as it was.
        let _ = send(&tx, stream, pending, false).await;
    }
}

async fn send(
    tx: &mpsc::Sender<Record>,
    stream: LogStream,
    content: Vec<u8>,
    full: bool,
) -> Result<(), ()> {
    tx.send(Record {
        at: Timestamp::now(),
        stream,
        content,
        full,
    })
    .await
    .map_err(|_| ())
}

/// How long the writer lets records gather after each write. Every write is a hand-off to
/// tokio's blocking pool (a thread wake and a switch), which for a container logging a line per
/// request cost more CPU than the request itself; with this, a busy container costs one write
/// per period. A writer that was idle writes a new record at once, and followers poll every
/// [`FOLLOW_POLL`] anyway, so nobody waits for it.
const WRITE_LINGER: Duration = Duration::from_millis(5);
/// Records taken into one write at most; a full batch is written without lingering, so a
/// container logging faster than this per [`WRITE_LINGER`] is not held back by it.
const WRITE_BATCH: usize = 256;

/// The single writer of one instance's file: formats records and rotates.
async fn write_records(
    log_path: PathBuf,
    policy: RotationPolicy,
    mut rx: mpsc::Receiver<Record>,
) -> Result<(), LogError> {
    if let Some(dir) = log_path.parent() {
        fs::create_dir_all(dir).await.map_err(io_err(dir))?;
    }
    let mut file = open_append(&log_path).await?;
    let mut size = file.metadata().await.map_err(io_err(&log_path))?.len();
    let mut records = Vec::with_capacity(WRITE_BATCH);
    let mut out = Vec::with_capacity(MAX_RECORD + 64);
    while rx.recv_many(&mut records, WRITE_BATCH).await > 0 {
        let full_batch = records.len() == WRITE_BATCH;
        out.clear();
        for record in records.drain(..) {
            let start = out.len();
            format_record(&record, &mut out);
            let len = (out.len() - start) as u64;
            if size > 0 && size + len > policy.max_size {
                // What came before this record belongs to the file being rotated out.
                file.write_all(&out[..start])
                    .await
                    .map_err(io_err(&log_path))?;
                file.flush().await.map_err(io_err(&log_path))?;
                drop(file);
                rotate(&log_path, policy.max_files).await?;
                file = open_append(&log_path).await?;
                size = 0;
                out.drain(..start);
            }
            size += len;
        }
        file.write_all(&out).await.map_err(io_err(&log_path))?;
        if !full_batch {
            tokio::time::sleep(WRITE_LINGER).await;
        }
    }
    file.flush().await.map_err(io_err(&log_path))?;
    file.sync_data().await.map_err(io_err(&log_path))
}

/// Appends one CRI record: `<RFC3339Nano> <stream> F|P <content>\n`.
fn format_record(record: &Record, out: &mut Vec<u8>) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{} ", record.at);
    out.extend_from_slice(record.stream.as_str().as_bytes());
    out.extend_from_slice(if record.full { b" F " } else { b" P " });
    out.extend_from_slice(&record.content);
    out.push(b'\n');
}

async fn open_append(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(io_err(path))
}

/// Renames the current file to the next sequence number and drops the oldest beyond
/// `max_files - 1` rotated files.
async fn rotate(log_path: &Path, max_files: usize) -> Result<(), LogError> {
    let rotated = rotated_files(log_path).await?;
    let next = rotated.last().map(|(seq, _)| seq + 1).unwrap_or(1);
    let mut target = log_path.as_os_str().to_owned();
    target.push(format!(".{next}"));
    let target = PathBuf::from(target);
    fs::rename(log_path, &target)
        .await
        .map_err(io_err(log_path))?;
    let keep = max_files.saturating_sub(1);
    let total = rotated.len() + 1;
    if total > keep {
        for (_, old) in rotated.iter().take(total - keep) {
            fs::remove_file(old).await.map_err(io_err(old))?;
        }
    }
    if keep == 0 {
        fs::remove_file(&target).await.map_err(io_err(&target))?;
    }
    Ok(())
}

/// `kubectl logs` options, as the kubelet's `/containerLogs` query carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    /// From `sinceTime`, or `sinceSeconds` before now.
    pub since: Option<Timestamp>,
    pub limit_bytes: Option<u64>,
}

fn parse_bool(field: &'static str, value: &str) -> Result<bool, LogError> {
    match value {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(LogError::InvalidOption {
            field,
            value: value.to_owned(),
            why: "use true or false",
        }),
    }
}

fn parse_number(field: &'static str, value: &str) -> Result<u64, LogError> {
    value.parse().map_err(|_| LogError::InvalidOption {
        field,
        value: value.to_owned(),
        why: "use a whole number of at least 0",
    })
}

impl LogOptions {
    /// Options from decoded query pairs; `now` anchors `sinceSeconds`. Unknown keys are
    /// ignored (as upstream).
    pub fn from_query<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: Timestamp,
    ) -> Result<Self, LogError> {
        let mut opts = Self::default();
        for (key, value) in pairs {
            match key {
                "follow" => opts.follow = parse_bool("follow", value)?,
                "previous" => opts.previous = parse_bool("previous", value)?,
                "timestamps" => opts.timestamps = parse_bool("timestamps", value)?,
                "tailLines" => opts.tail_lines = Some(parse_number("tailLines", value)?),
                "limitBytes" => {
                    let n = parse_number("limitBytes", value)?;
                    if n == 0 {
                        return Err(LogError::InvalidOption {
                            field: "limitBytes",
                            value: value.to_owned(),
                            why: "must be greater than 0",
                        });
                    }
                    opts.limit_bytes = Some(n);
                }
                "sinceSeconds" => {
                    let n = parse_number("sinceSeconds", value)?;
                    let secs = i64::try_from(n).unwrap_or(i64::MAX);
                    let since = jiff::SignedDuration::from_secs(secs);
                    opts.since = Some(now.checked_sub(since).unwrap_or(Timestamp::MIN));
                }
                "sinceTime" => {
                    opts.since = Some(value.parse().map_err(|_| LogError::InvalidOption {
                        field: "sinceTime",
                        value: value.to_owned(),
                        why: "use an RFC 3339 time such as 2024-01-02T03:04:05Z",
                    })?)
                }
                _ => {}
            }
        }
        Ok(opts)
    }
}

/// The log file to read: the instance `restart_count`'s, or with `previous` the newest
/// earlier instance that left a file.
pub fn select_instance(
    container_dir: &Path,
    restart_count: u32,
    previous: bool,
) -> Result<PathBuf, LogError> {
    if !previous {
        return Ok(instance_log_path(container_dir, restart_count));
    }
    (0..restart_count)
        .rev()
        .map(|n| instance_log_path(container_dir, n))
        .find(|p| p.exists())
        .ok_or_else(|| LogError::NoPrevious {
            dir: container_dir.to_owned(),
        })
}

/// One parsed record.
struct Parsed<'a> {
    time: Option<Timestamp>,
    raw_time: &'a [u8],
    content: &'a [u8],
    full: bool,
}

/// Parses `<time> <stream> <tag> <content>` (the line without its newline).
fn parse_record(line: &[u8]) -> Parsed<'_> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let raw_time = parts.next().unwrap_or_default();
    let _stream = parts.next();
    let tag = parts.next().unwrap_or_default();
    match parts.next() {
        Some(content) => Parsed {
            time: std::str::from_utf8(raw_time)
                .ok()
                .and_then(|t| t.parse().ok()),
            raw_time,
            content,
            full: tag != b"P",
        },
        // Not a CRI record (written by hand?): passed through as one full line.
        None => Parsed {
            time: None,
            raw_time: b"",
            content: line,
            full: true,
        },
    }
}

/// Turns records into `kubectl logs` output under the options' filters and limits.
struct Emitter {
    out: mpsc::Sender<Bytes>,
    timestamps: bool,
    since: Option<Timestamp>,
    remaining: Option<u64>,
}

impl Emitter {
    /// Formats a record, or `None` when filtered out.
    fn format(&self, line: &[u8]) -> Option<Vec<u8>> {
        let rec = parse_record(line);
        if let (Some(since), Some(time)) = (self.since, rec.time)
            && time < since
        {
            return None;
        }
        let mut text = Vec::with_capacity(rec.content.len() + 40);
        if self.timestamps && !rec.raw_time.is_empty() {
            text.extend_from_slice(rec.raw_time);
            text.push(b' ');
        }
        text.extend_from_slice(rec.content);
        if rec.full {
            text.push(b'\n');
        }
        Some(text)
    }

    /// Sends formatted bytes; `false` when done (limit reached or the reader went away).
    async fn send(&mut self, mut text: Vec<u8>) -> bool {
        if let Some(left) = self.remaining.as_mut() {
            if *left == 0 {
                return false;
            }
            if text.len() as u64 > *left {
                text.truncate(*left as usize);
            }
            *left -= text.len() as u64;
        }
        if self.out.send(Bytes::from(text)).await.is_err() {
            return false;
        }
        self.remaining != Some(0)
    }

    async fn emit(&mut self, line: &[u8]) -> bool {
        match self.format(line) {
            Some(text) => self.send(text).await,
            None => true,
        }
    }
}

/// A log file being read line by line, remembering a line cut by the end of the file.
struct Cursor {
    reader: BufReader<File>,
    inode: u64,
    pending: Vec<u8>,
}

impl Cursor {
    async fn open(path: &Path) -> Result<Self, LogError> {
        let file = File::open(path).await.map_err(io_err(path))?;
        let inode = file.metadata().await.map_err(io_err(path))?.ino();
        Ok(Self {
            reader: BufReader::new(file),
            inode,
            pending: Vec::new(),
        })
    }

    /// The next complete line (without its newline), or `None` at the end of the file for now.
    async fn next_line(&mut self, path: &Path) -> Result<Option<Vec<u8>>, LogError> {
        let n = self
            .reader
            .read_until(b'\n', &mut self.pending)
            .await
            .map_err(io_err(path))?;
        if n > 0 && self.pending.last() == Some(&b'\n') {
            let mut line = std::mem::take(&mut self.pending);
            line.pop();
            return Ok(Some(line));
        }
        Ok(None)
    }
}

/// The rotated file written right after the one with inode `after`, if several rotations
/// happened since the follower last looked, else the current file. Opening the current file
/// races with the writer rotating it again, so the choice is checked once the file is open:
/// if a successor appeared and it is not the file just opened, that successor is the one.
async fn successor_path(log_path: &Path, after: u64) -> Result<Option<PathBuf>, LogError> {
    let mut found = false;
    for (_, p) in rotated_files(log_path).await? {
        if found {
            return Ok(Some(p));
        }
        found = fs::metadata(&p).await.map(|m| m.ino()).ok() == Some(after);
    }
    Ok(None)
}

async fn open_successor(log_path: &Path, after: u64) -> Result<Cursor, LogError> {
    if let Some(next) = successor_path(log_path, after).await? {
        return Cursor::open(&next).await;
    }
    let current = Cursor::open(log_path).await?;
    match successor_path(log_path, after).await? {
        Some(next) if fs::metadata(&next).await.map(|m| m.ino()).ok() != Some(current.inode) => {
            Cursor::open(&next).await
        }
        _ => Ok(current),
    }
}

/// Streams the log at `log_path` (from [`select_instance`]) to `out` as `kubectl logs` shows
/// it. Returns when everything asked for was sent, the reader went away, or — following —
/// when the instance is marked finished.
pub async fn stream_logs(
    log_path: &Path,
    opts: &LogOptions,
    out: mpsc::Sender<Bytes>,
) -> Result<(), LogError> {
    let mut emitter = Emitter {
        out,
        timestamps: opts.timestamps,
        since: opts.since,
        remaining: opts.limit_bytes,
    };
    if !log_path.exists() {
        if opts.follow && !finished_marker(log_path).exists() {
            // Not started yet: wait for the file (or the end of the instance).
            loop {
                if log_path.exists() {
                    break;
                }
                if finished_marker(log_path).exists() || emitter.out.is_closed() {
                    return Ok(());
                }
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        } else {
            return Err(LogError::NotStarted {
                path: log_path.to_owned(),
            });
        }
    }
    // Rotated files first (oldest first), then the current one, which a follower keeps open.
    let mut files: Vec<PathBuf> = rotated_files(log_path)
        .await?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    files.push(log_path.to_owned());
    let mut tail: Option<VecDeque<Vec<u8>>> = opts.tail_lines.map(|_| VecDeque::new());
    let tail_max = opts.tail_lines.unwrap_or(0) as usize;
    let mut current = None;
    for path in &files {
        let mut cursor = match Cursor::open(path).await {
            Ok(c) => c,
            // Rotated away while listing: its lines are in the next file's predecessor.
            Err(LogError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                continue;
            }
            Err(e) => return Err(e),
        };
        while let Some(line) = cursor.next_line(path).await? {
            match tail.as_mut() {
                Some(tail) => {
                    if tail_max == 0 {
                        continue;
                    }
                    if let Some(text) = emitter.format(&line) {
                        if tail.len() == tail_max {
                            tail.pop_front();
                        }
                        tail.push_back(text);
                    }
                }
                None => {
                    if !emitter.emit(&line).await {
                        return Ok(());
                    }
                }
            }
        }
        if path == log_path {
            current = Some(cursor);
        }
    }
    for text in tail.into_iter().flatten() {
        if !emitter.send(text).await {
            return Ok(());
        }
    }
    if !opts.follow {
        return Ok(());
    }
    let mut cursor = match current {
        Some(c) => c,
        None => Cursor::open(log_path).await?,
    };
    loop {
        while let Some(line) = cursor.next_line(log_path).await? {
            if !emitter.emit(&line).await {
                return Ok(());
            }
        }
        // Read the finished marker before the last look at the file: whatever the writer
        // wrote before marking is then seen.
        let finished = finished_marker(log_path).exists();
        let rotated = match fs::metadata(log_path).await {
            Ok(meta) => meta.ino() != cursor.inode,
            Err(_) => false,
        };
        if rotated {
            // The writer renamed our file before creating the new one: drain it, then switch.
            while let Some(line) = cursor.next_line(log_path).await? {
                if !emitter.emit(&line).await {
                    return Ok(());
                }
            }
            match open_successor(log_path, cursor.inode).await {
                Ok(c) => cursor = c,
                // Caught between a rename and the new file: look again shortly.
                Err(LogError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => return Err(e),
            }
            continue;
        }
        if finished {
            while let Some(line) = cursor.next_line(log_path).await? {
                if !emitter.emit(&line).await {
                    return Ok(());
                }
            }
            return Ok(());
        }
        if emitter.out.is_closed() {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn opts() -> LogOptions {
        LogOptions::default()
    }

    async fn collect(path: &Path, opts: &LogOptions) -> Result<String, LogError> {
        let (tx, mut rx) = mpsc::channel(1024);
        stream_logs(path, opts, tx).await?;
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.extend_from_slice(&b);
        }
        Ok(String::from_utf8(out).unwrap())
    }

    fn write_file(path: &Path, records: &[(&str, &str, &str)]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut text = String::new();
        for (time, tag, content) in records {
            text.push_str(&format!("{time} stdout {tag} {content}\n"));
        }
        std::fs::write(path, text).unwrap();
    }

    const T1: &str = "2024-01-01T00:00:01.5Z";
    const T2: &str = "2024-01-01T00:00:02Z";
    const T3: &str = "2024-01-01T00:00:03.123456789Z";

    fn sample(dir: &Path) -> PathBuf {
        let path = instance_log_path(dir, 0);
        write_file(
            &path,
            &[
                (T1, "F", "one"),
                (T2, "P", "tw"),
                (T2, "F", "o"),
                (T3, "F", "three"),
            ],
        );
        path
    }

    #[tokio::test]
    async fn writer_writes_cri_records_from_both_streams() {
        let dir = tempfile::tempdir().unwrap();
        let path = instance_log_path(dir.path(), 0);
        let out: &[u8] = b"hello\nworld\nno newline";
        let err: &[u8] = b"oops\n";
        LogWriter::spawn(
            path.clone(),
            RotationPolicy::default(),
            Some(out),
            Some(err),
        )
        .await
        .unwrap()
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        for line in &lines {
            let time = line.split(' ').next().unwrap();
            assert!(time.parse::<Timestamp>().is_ok(), "{line}");
            assert!(time.ends_with('Z'), "{line}");
        }
        assert!(text.contains(" stdout F hello\n"));
        assert!(text.contains(" stdout F world\n"));
        assert!(text.contains(" stdout P no newline\n"));
        assert!(text.contains(" stderr F oops\n"));
        let got = collect(&path, &opts()).await.unwrap();
        assert!(got.contains("hello\nworld\n") && got.contains("no newline"));
    }

    #[tokio::test]
    async fn long_lines_are_split_into_partial_records_and_joined_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = instance_log_path(dir.path(), 0);
        let long = "x".repeat(MAX_RECORD * 2 + 10) + "\n";
        LogWriter::spawn(
            path.clone(),
            RotationPolicy::default(),
            Some(std::io::Cursor::new(long.clone().into_bytes())),
            None::<&[u8]>,
        )
        .await
        .unwrap()
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().filter(|l| l.contains(" P ")).count(), 2);
        assert_eq!(collect(&path, &opts()).await.unwrap(), long);
    }

    #[tokio::test]
    async fn writer_rotates_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = instance_log_path(dir.path(), 0);
        let mut input = String::new();
        for i in 0..200 {
            input.push_str(&format!("line {i:04}\n"));
        }
        let policy = RotationPolicy {
            max_size: 400,
            max_files: 3,
        };
        LogWriter::spawn(
            path.clone(),
            policy,
            Some(std::io::Cursor::new(input.into_bytes())),
            None::<&[u8]>,
        )
        .await
        .unwrap()
        .unwrap();
        let rotated = rotated_files(&path).await.unwrap();
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        for (_, p) in &rotated {
            assert!(std::fs::metadata(p).unwrap().len() <= 400);
        }
        // Reading spans the rotated files in order and ends with the last line.
        let got = collect(&path, &opts()).await.unwrap();
        assert!(got.ends_with("line 0199\n"), "{got}");
        let numbers: Vec<u32> = got
            .lines()
            .map(|l| l.trim_start_matches("line ").parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{got}");
    }

    #[tokio::test]
    async fn plain_read_joins_partial_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        assert_eq!(collect(&path, &opts()).await.unwrap(), "one\ntwo\nthree\n");
    }

    #[tokio::test]
    async fn timestamps_prefix_each_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let o = LogOptions {
            timestamps: true,
            ..opts()
        };
        assert_eq!(
            collect(&path, &o).await.unwrap(),
            format!("{T1} one\n{T2} tw{T2} o\n{T3} three\n")
        );
    }

    #[tokio::test]
    async fn tail_lines_keeps_the_last_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let tail = |n| LogOptions {
            tail_lines: Some(n),
            ..opts()
        };
        assert_eq!(collect(&path, &tail(1)).await.unwrap(), "three\n");
        assert_eq!(collect(&path, &tail(0)).await.unwrap(), "");
        assert_eq!(
            collect(&path, &tail(10)).await.unwrap(),
            "one\ntwo\nthree\n"
        );
    }

    #[tokio::test]
    async fn since_time_and_since_seconds_filter_older_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let q = LogOptions::from_query([("sinceTime", T2)], Timestamp::now()).unwrap();
        assert_eq!(collect(&path, &q).await.unwrap(), "two\nthree\n");
        // sinceSeconds counts back from `now`.
        let now: Timestamp = "2024-01-01T00:00:04Z".parse().unwrap();
        let q = LogOptions::from_query([("sinceSeconds", "1")], now).unwrap();
        assert_eq!(collect(&path, &q).await.unwrap(), "three\n");
    }

    #[tokio::test]
    async fn limit_bytes_truncates_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let o = LogOptions {
            limit_bytes: Some(6),
            ..opts()
        };
        assert_eq!(collect(&path, &o).await.unwrap(), "one\ntw");
    }

    #[tokio::test]
    async fn previous_reads_the_earlier_instance_or_says_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let first = sample(dir.path());
        assert_eq!(select_instance(dir.path(), 1, true).unwrap(), first);
        assert_eq!(
            select_instance(dir.path(), 1, false).unwrap(),
            instance_log_path(dir.path(), 1)
        );
        let err = select_instance(dir.path(), 0, true).unwrap_err();
        assert!(matches!(err, LogError::NoPrevious { .. }));
        assert!(err.to_string().contains("--previous"), "{err}");
    }

    #[tokio::test]
    async fn follow_streams_new_lines_across_rotation_until_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = instance_log_path(dir.path(), 0);
        let (mut child_out, writer_in) = tokio::io::duplex(64);
        let writer = LogWriter::spawn(
            path.clone(),
            RotationPolicy {
                max_size: 200,
                max_files: 20,
            },
            Some(writer_in),
            None::<&[u8]>,
        );
        child_out.write_all(b"first\n").await.unwrap();
        while !path.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (tx, mut rx) = mpsc::channel(1024);
        let follow = LogOptions {
            follow: true,
            ..opts()
        };
        let reader = {
            let path = path.clone();
            tokio::spawn(async move { stream_logs(&path, &follow, tx).await })
        };
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("first\n") {
            got.extend_from_slice(&rx.recv().await.unwrap());
        }
        // Enough lines to rotate several times while the reader follows.
        for i in 0..40 {
            child_out
                .write_all(format!("line {i:02}\n").as_bytes())
                .await
                .unwrap();
        }
        drop(child_out);
        writer.await.unwrap().unwrap();
        assert!(!rotated_files(&path).await.unwrap().is_empty());
        mark_finished(&path).unwrap();
        reader.await.unwrap().unwrap();
        while let Some(b) = rx.recv().await {
            got.extend_from_slice(&b);
        }
        let mut expected = String::from("first\n");
        for i in 0..40 {
            expected.push_str(&format!("line {i:02}\n"));
        }
        assert_eq!(String::from_utf8(got).unwrap(), expected);
    }

    #[test]
    fn query_options_parse_and_reject_bad_values() {
        let now = Timestamp::now();
        let q = LogOptions::from_query(
            [
                ("follow", "true"),
                ("previous", "false"),
                ("timestamps", "true"),
                ("tailLines", "5"),
                ("limitBytes", "100"),
                ("container", "app"),
            ],
            now,
        )
        .unwrap();
        assert!(q.follow && q.timestamps && !q.previous);
        assert_eq!((q.tail_lines, q.limit_bytes), (Some(5), Some(100)));
        let err = LogOptions::from_query([("tailLines", "-1")], now).unwrap_err();
        assert!(err.to_string().contains("tailLines"), "{err}");
        let err = LogOptions::from_query([("sinceTime", "yesterday")], now).unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
        assert!(LogOptions::from_query([("limitBytes", "0")], now).is_err());
    }
}
