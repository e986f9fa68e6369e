//! A snapshot's bytes as openraft moves them: the bytes a leader sent, or
//! this member's own snapshot, built from RocksDB only when something reads
//! it. openraft asks for the current snapshot at every start-up just for its
//! meta; building the payload there (every event since the first) would hold
//! the whole history in memory, which on a long history is more than the
//! machine has.

use std::io::{self, Cursor, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

type Build = Box<dyn FnOnce() -> crate::Result<Vec<u8>> + Send + Sync>;

pub struct SnapshotData {
    bytes: Cursor<Vec<u8>>,
    /// Builds the bytes; taken by the first read or seek.
    build: Option<Build>,
}

impl SnapshotData {
    /// Bytes already in memory (a snapshot being received, or an empty one).
    pub fn new(bytes: Vec<u8>) -> SnapshotData {
        SnapshotData { bytes: Cursor::new(bytes), build: None }
    }

    /// Bytes that `build` makes when they are first read.
    pub(crate) fn deferred(build: impl FnOnce() -> crate::Result<Vec<u8>> + Send + Sync + 'static) -> SnapshotData {
        SnapshotData { bytes: Cursor::new(Vec::new()), build: Some(Box::new(build)) }
    }

    /// Whether the bytes exist yet.
    pub fn is_built(&self) -> bool {
        self.build.is_none()
    }

    fn ready(&mut self) -> io::Result<()> {
        if let Some(build) = self.build.take() {
            let bytes = build().map_err(|e| io::Error::other(format!("building the snapshot's payload: {e}")))?;
            self.bytes = Cursor::new(bytes);
        }
        Ok(())
    }

    /// The bytes, built first if need be.
    pub fn bytes(&mut self) -> io::Result<&[u8]> {
        self.ready()?;
        Ok(self.bytes.get_ref())
    }

    /// The bytes, built first if need be.
    pub fn into_bytes(mut self) -> io::Result<Vec<u8>> {
        self.ready()?;
        Ok(self.bytes.into_inner())
    }
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.build {
            Some(_) => f.write_str("SnapshotData(not built yet)"),
            None => write!(f, "SnapshotData({} bytes)", self.bytes.get_ref().len()),
        }
    }
}

impl AsyncRead for SnapshotData {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.ready() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.bytes).poll_read(cx, buf)
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        this.ready()?;
        Pin::new(&mut this.bytes).start_seek(position)
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.get_mut().bytes).poll_complete(cx)
    }
}

impl AsyncWrite for SnapshotData {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.ready() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.bytes).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().bytes).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().bytes).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncSeekExt};

    use super::*;

    /// Deferred bytes are built once, on the first read or seek, and read
    /// like any others; a failed build is a read error naming it.
    #[tokio::test]
    async fn deferred_bytes_are_built_once_when_first_read() {
        let builds = Arc::new(AtomicUsize::new(0));
        let counter = builds.clone();
        let mut data = SnapshotData::deferred(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(b"0123456789".to_vec())
        });
        assert!(!data.is_built());
        assert_eq!(builds.load(Ordering::SeqCst), 0, "nothing built before a read");
        assert_eq!(data.seek(SeekFrom::Start(4)).await.expect("seek"), 4);
        let mut rest = String::new();
        data.read_to_string(&mut rest).await.expect("read");
        assert_eq!(rest, "456789");
        assert_eq!(data.into_bytes().expect("bytes"), b"0123456789");
        assert_eq!(builds.load(Ordering::SeqCst), 1);

        let mut broken = SnapshotData::deferred(|| Err(crate::Error::Storage("disk on fire".into())));
        let err = broken.read_u8().await.expect_err("the build fails");
        assert!(err.to_string().contains("snapshot's payload") && err.to_string().contains("disk on fire"), "{err}");
    }
}
