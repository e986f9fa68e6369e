//! A snapshot's bytes as openraft moves them: the bytes a leader sent, or
//! this member's own snapshot, produced from RocksDB piece by piece while a
//! member reads it to send it. openraft asks for the current snapshot at
//! every start-up just for its meta, and a snapshot's payload holds every
//! event since the first: built whole in memory, it is more than the
//! machine has on a long history (a 10 M-event member was OOM-killed).
//!
//! openraft's chunked sender first seeks to the end (for the length), then
//! reads chunk by chunk, seeking to each chunk's offset (the same offset
//! again on a retry). A streamed snapshot answers the length by one pass
//! that only counts bytes, then serves reads from the pieces it holds (a
//! few MiB behind the read position, for retries), moving forward through
//! the source; a seek further back starts the source again. The source's work (RocksDB reads) runs on the
//! blocking pool, off the async threads.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, Cursor, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

/// One pass over a streamed payload: its bytes in pieces, in order.
pub(crate) type Pieces = Box<dyn Iterator<Item = crate::Result<Vec<u8>>> + Send>;

/// Starts a pass from the first byte; every pass yields the same bytes.
pub(crate) type Source = Arc<dyn Fn() -> Pieces + Send + Sync>;

pub struct SnapshotData {
    inner: Inner,
}

enum Inner {
    Bytes(Cursor<Vec<u8>>),
    Streamed(Box<Streamed>),
    Spooled(Spool),
}

/// A snapshot being received, written to a file beside the database rather
/// than held in memory; the file goes with it.
struct Spool {
    file: tokio::fs::File,
    path: PathBuf,
    keep: bool,
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The prefix of the files snapshots are received into; any left by a
/// crash are removed when the store opens ([`remove_stale_spools`]).
const SPOOL_PREFIX: &str = "incoming-snapshot-";

/// Removes the receive files a crash left in `dir`.
pub(crate) fn remove_stale_spools(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(SPOOL_PREFIX) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

impl SnapshotData {
    /// Bytes already in memory (a snapshot being received, or an empty one).
    pub fn new(bytes: Vec<u8>) -> SnapshotData {
        SnapshotData { inner: Inner::Bytes(Cursor::new(bytes)) }
    }

    /// An empty file in `dir` to receive a snapshot into.
    pub(crate) async fn spool(dir: &Path) -> io::Result<SnapshotData> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path =
            dir.join(format!("{SPOOL_PREFIX}{}-{}.part", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        let file = tokio::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).await?;
        Ok(SnapshotData { inner: Inner::Spooled(Spool { file, path, keep: false }) })
    }

    /// Keeps the receive file when this goes: an interrupted install
    /// resumes from it.
    pub(crate) fn keep_file(&mut self) {
        if let Inner::Spooled(s) = &mut self.inner {
            s.keep = true;
        }
    }

    /// The file a received snapshot was written to, if it was.
    pub(crate) fn spooled_path(&self) -> Option<&Path> {
        match &self.inner {
            Inner::Spooled(s) => Some(&s.path),
            _ => None,
        }
    }

    /// Bytes that `source` produces piece by piece as they are read; never
    /// all in memory at once.
    pub(crate) fn streamed(source: Source) -> SnapshotData {
        Self::streamed_keeping(source, KEEP_BEHIND)
    }

    fn streamed_keeping(source: Source, keep: u64) -> SnapshotData {
        SnapshotData {
            inner: Inner::Streamed(Box::new(Streamed {
                source,
                len: None,
                pos: 0,
                pass: Some(Pass::default()),
                job: None,
                seek: None,
                keep,
            })),
        }
    }

    /// Whether the bytes are held in memory (not produced as read).
    pub fn is_built(&self) -> bool {
        matches!(self.inner, Inner::Bytes(_))
    }

    /// The bytes, all in memory: a streamed payload is produced whole first
    /// (for tests and small snapshots; openraft reads it in chunks instead).
    pub fn bytes(&mut self) -> io::Result<&[u8]> {
        match &self.inner {
            Inner::Bytes(_) => {}
            Inner::Streamed(s) => self.inner = Inner::Bytes(Cursor::new(collect(&s.source)?)),
            Inner::Spooled(s) => self.inner = Inner::Bytes(Cursor::new(std::fs::read(&s.path)?)),
        }
        match &self.inner {
            Inner::Bytes(c) => Ok(c.get_ref()),
            _ => unreachable!("made into bytes above"),
        }
    }

    /// The bytes, all in memory (see [`SnapshotData::bytes`]).
    pub fn into_bytes(self) -> io::Result<Vec<u8>> {
        match self.inner {
            Inner::Bytes(c) => Ok(c.into_inner()),
            Inner::Streamed(s) => collect(&s.source),
            Inner::Spooled(s) => std::fs::read(&s.path),
        }
    }
}

fn payload_error(e: crate::Error) -> io::Error {
    io::Error::other(format!("building the snapshot's payload: {e}"))
}

fn collect(source: &Source) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for piece in source() {
        out.extend_from_slice(&piece.map_err(payload_error)?);
    }
    Ok(out)
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Streamed(s) => match s.len {
                Some(len) => write!(f, "SnapshotData(streamed, {len} bytes)"),
                None => f.write_str("SnapshotData(streamed)"),
            },
            Inner::Bytes(c) => write!(f, "SnapshotData({} bytes)", c.get_ref().len()),
            Inner::Spooled(s) => write!(f, "SnapshotData(receiving into {})", s.path.display()),
        }
    }
}

/// Bytes behind the read position kept for a retry of openraft's last chunk
/// (1 MiB): a seek back within them does not start the source again.
const KEEP_BEHIND: u64 = 4 << 20;

/// Where a pass over the source stands: the pieces held, each with its
/// offset, up to `next` (where the next piece starts).
#[derive(Default)]
struct Pass {
    pieces: Option<Pieces>,
    held: VecDeque<(u64, Vec<u8>)>,
    next: u64,
    ended: bool,
}

impl Pass {
    /// The bytes held from `pos` to the end of the piece holding it.
    fn at(&self, pos: u64) -> Option<&[u8]> {
        self.pieces.as_ref()?;
        let (start, piece) = self.held.iter().find(|(start, p)| pos >= *start && pos < start + p.len() as u64)?;
        Some(&piece[(pos - start) as usize..])
    }

    fn first_held(&self) -> u64 {
        self.held.front().map_or(self.next, |(start, _)| *start)
    }

    /// Moves until a piece held covers `target`, or the source ends; a
    /// target before the pieces held starts a new pass. `len` is the length
    /// a counting pass found, which this pass must match.
    fn fill(&mut self, target: u64, source: &Source, len: Option<u64>, keep: u64) -> io::Result<()> {
        if self.pieces.is_none() || target < self.first_held() {
            *self = Pass { pieces: Some(source()), ..Pass::default() };
        }
        let changed = |now: u64, len: u64| {
            io::Error::other(format!(
                "the snapshot's payload changed while it was read: {len} bytes counted, {now} produced"
            ))
        };
        while !self.ended && target >= self.next {
            let Some(pieces) = self.pieces.as_mut() else { break };
            match pieces.next() {
                Some(Ok(piece)) => {
                    let start = self.next;
                    self.next += piece.len() as u64;
                    if let Some(len) = len.filter(|len| self.next > *len) {
                        let now = self.next;
                        *self = Pass::default();
                        return Err(changed(now, len));
                    }
                    self.held.push_back((start, piece));
                    while self.held.front().is_some_and(|(s, p)| s + p.len() as u64 + keep <= target) {
                        self.held.pop_front();
                    }
                }
                Some(Err(e)) => {
                    *self = Pass::default();
                    return Err(payload_error(e));
                }
                None => {
                    self.ended = true;
                    if let Some(len) = len.filter(|len| *len != self.next) {
                        let now = self.next;
                        *self = Pass::default();
                        return Err(changed(now, len));
                    }
                }
            }
        }
        Ok(())
    }
}

type Job = JoinHandle<(Pass, io::Result<Option<u64>>)>;

struct Streamed {
    source: Source,
    /// The payload's length, once a counting pass has run.
    len: Option<u64>,
    /// The read position.
    pos: u64,
    /// `None` while a job holds it.
    pass: Option<Pass>,
    job: Option<Job>,
    /// A seek started and not yet completed.
    seek: Option<SeekFrom>,
    /// Bytes kept behind the read position ([`KEEP_BEHIND`]).
    keep: u64,
}

impl Streamed {
    /// Waits for the job in flight, if any, and takes back its pass.
    fn poll_job(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(job) = self.job.as_mut() {
            let done = ready!(Pin::new(job).poll(cx));
            self.job = None;
            let (pass, outcome) = done.unwrap_or_else(|e| {
                (Pass::default(), Err(io::Error::other(format!("building the snapshot's payload stopped: {e}"))))
            });
            self.pass = Some(pass);
            if let Some(len) = outcome? {
                self.len = Some(len);
            }
        }
        Poll::Ready(Ok(()))
    }

    fn start_job(&mut self, job: impl FnOnce(&mut Pass) -> io::Result<Option<u64>> + Send + 'static) {
        let mut pass = self.pass.take().unwrap_or_default();
        self.job = Some(tokio::task::spawn_blocking(move || {
            let outcome = job(&mut pass);
            (pass, outcome)
        }));
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_job(cx))?;
            let pass = self.pass.get_or_insert_with(Pass::default);
            if let Some(bytes) = pass.at(self.pos) {
                let n = out.remaining().min(bytes.len());
                out.put_slice(&bytes[..n]);
                self.pos += n as u64;
                return Poll::Ready(Ok(()));
            }
            if pass.ended && pass.pieces.is_some() && self.pos >= pass.next {
                return Poll::Ready(Ok(()));
            }
            let (target, source, len, keep) = (self.pos, self.source.clone(), self.len, self.keep);
            self.start_job(move |pass| pass.fill(target, &source, len, keep).map(|()| None));
        }
    }

    fn poll_seek(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        loop {
            if let Err(e) = ready!(self.poll_job(cx)) {
                self.seek = None;
                return Poll::Ready(Err(e));
            }
            let to = match self.seek {
                None => return Poll::Ready(Ok(self.pos)),
                Some(SeekFrom::Start(n)) => Some(n),
                Some(SeekFrom::Current(d)) => self.pos.checked_add_signed(d),
                Some(SeekFrom::End(d)) => match self.len {
                    Some(len) => len.checked_add_signed(d),
                    None => {
                        let source = self.source.clone();
                        self.start_job(move |_| {
                            let mut len = 0u64;
                            for piece in source() {
                                len += piece.map_err(payload_error)?.len() as u64;
                            }
                            Ok(Some(len))
                        });
                        continue;
                    }
                },
            };
            self.seek = None;
            return Poll::Ready(match to {
                Some(to) => {
                    self.pos = to;
                    Ok(to)
                }
                None => Err(io::Error::new(io::ErrorKind::InvalidInput, "seek to a negative or overflowing position")),
            });
        }
    }
}

impl AsyncRead for SnapshotData {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Bytes(c) => Pin::new(c).poll_read(cx, buf),
            Inner::Streamed(s) => s.poll_read(cx, buf),
            Inner::Spooled(s) => Pin::new(&mut s.file).poll_read(cx, buf),
        }
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        match &mut self.get_mut().inner {
            Inner::Bytes(c) => Pin::new(c).start_seek(position),
            Inner::Streamed(s) => {
                s.seek = Some(position);
                Ok(())
            }
            Inner::Spooled(s) => Pin::new(&mut s.file).start_seek(position),
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match &mut self.get_mut().inner {
            Inner::Bytes(c) => Pin::new(c).poll_complete(cx),
            Inner::Streamed(s) => s.poll_seek(cx),
            Inner::Spooled(s) => Pin::new(&mut s.file).poll_complete(cx),
        }
    }
}

fn not_writable() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "this member's own snapshot is read-only")
}

impl AsyncWrite for SnapshotData {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Bytes(c) => Pin::new(c).poll_write(cx, data),
            Inner::Streamed(_) => Poll::Ready(Err(not_writable())),
            Inner::Spooled(s) => Pin::new(&mut s.file).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Bytes(c) => Pin::new(c).poll_flush(cx),
            Inner::Streamed(_) => Poll::Ready(Ok(())),
            Inner::Spooled(s) => Pin::new(&mut s.file).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Bytes(c) => Pin::new(c).poll_shutdown(cx),
            Inner::Streamed(_) => Poll::Ready(Ok(())),
            Inner::Spooled(s) => Pin::new(&mut s.file).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncSeekExt};

    use super::*;

    /// A source of `pieces`, counting the passes started.
    fn counted(pieces: &'static [&'static str], passes: Arc<AtomicUsize>) -> Source {
        Arc::new(move || {
            passes.fetch_add(1, Ordering::SeqCst);
            Box::new(pieces.iter().map(|p| Ok(p.as_bytes().to_vec())))
        })
    }

    /// What openraft's chunked sender does: seek to the end for the length,
    /// then seek to each chunk's offset and read it, re-reading a chunk on a
    /// retry. A streamed payload answers all of it without holding more
    /// than one piece, and starts no pass before it is read.
    #[tokio::test]
    async fn streamed_bytes_read_and_seek_like_a_file() {
        let passes = Arc::new(AtomicUsize::new(0));
        let mut data = SnapshotData::streamed_keeping(counted(&["012", "", "3456", "789"], passes.clone()), 4);
        assert!(!data.is_built());
        assert_eq!(passes.load(Ordering::SeqCst), 0, "nothing produced before a read");
        assert_eq!(data.seek(SeekFrom::End(0)).await.expect("length"), 10);
        let mut chunk = [0u8; 4];
        let mut sent = Vec::new();
        for offset in [0u64, 4, 4, 8] {
            assert_eq!(data.seek(SeekFrom::Start(offset)).await.expect("seek"), offset);
            let n = data.read(&mut chunk).await.expect("read");
            let n2 = if n < 4 { data.read(&mut chunk[n..]).await.expect("read") } else { 0 };
            sent.push(String::from_utf8(chunk[..n + n2].to_vec()).expect("utf8"));
        }
        assert_eq!(sent, ["0123", "4567", "4567", "89"]);
        assert_eq!(data.read(&mut chunk).await.expect("eof"), 0, "the end reads as the end");
        assert_eq!(passes.load(Ordering::SeqCst), 2, "one pass to count, one to send, retries included");
        // Backwards past the bytes kept (4 behind the last read): a new pass.
        data.seek(SeekFrom::Start(1)).await.expect("seek back");
        let mut rest = String::new();
        data.read_to_string(&mut rest).await.expect("read");
        assert_eq!(rest, "123456789");
        assert_eq!(passes.load(Ordering::SeqCst), 3);
        assert_eq!(data.into_bytes().expect("bytes"), b"0123456789");
    }

    /// A source that fails, or whose bytes change between the counting pass
    /// and the sending pass, is a read error that says so, never bytes that
    /// contradict the length openraft was given.
    #[tokio::test]
    async fn a_failing_or_changing_source_is_an_error() {
        let broken: Source = Arc::new(|| Box::new(std::iter::once(Err(crate::Error::Storage("disk on fire".into())))));
        let mut data = SnapshotData::streamed(broken.clone());
        let err = data.read_u8().await.expect_err("the source fails");
        assert!(err.to_string().contains("snapshot's payload") && err.to_string().contains("disk on fire"), "{err}");
        let err = SnapshotData::streamed(broken).seek(SeekFrom::End(0)).await.expect_err("cannot count");
        assert!(err.to_string().contains("disk on fire"), "{err}");

        let grows = Arc::new(Mutex::new(vec!["abc".to_string()]));
        let shared = grows.clone();
        let source: Source = Arc::new(move || {
            let pieces = shared.lock().expect("lock").clone();
            Box::new(pieces.into_iter().map(|p| Ok(p.into_bytes())))
        });
        let mut data = SnapshotData::streamed(source);
        assert_eq!(data.seek(SeekFrom::End(0)).await.expect("length"), 3);
        grows.lock().expect("lock").push("def".into());
        data.seek(SeekFrom::Start(0)).await.expect("seek");
        let mut all = Vec::new();
        let err = data.read_to_end(&mut all).await.expect_err("longer than counted");
        assert!(err.to_string().contains("changed while it was read"), "{err}");
    }
}
