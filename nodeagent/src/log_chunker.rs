use std::fmt;

/// Which output of a workload a piece of text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

impl fmt::Display for OutputStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `ReportWorkloadLogs` worth of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub stream: OutputStream,
    pub data: String,
}

/// Turns a workload's raw output bytes into bounded UTF-8 chunks.
///
/// Bytes are buffered per stream. A chunk never exceeds `max_bytes` of UTF-8
/// and is never cut inside a character; invalid UTF-8 becomes U+FFFD. A
/// character split across two reads is held back until its remaining bytes
/// arrive (or until [`LogChunker::finish`]).
#[derive(Debug)]
pub struct LogChunker {
    max_bytes: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl LogChunker {
    /// The default chunk bound; well under the control plane's limit so a
    /// chunk is a small Raft entry.
    pub const DEFAULT_MAX_BYTES: usize = 16 * 1024;

    pub fn new(max_bytes: usize) -> Self {
        assert!(max_bytes >= 4, "a chunk must hold at least one character");
        LogChunker { max_bytes, stdout: Vec::new(), stderr: Vec::new() }
    }

    fn buf(&mut self, stream: OutputStream) -> &mut Vec<u8> {
        match stream {
            OutputStream::Stdout => &mut self.stdout,
            OutputStream::Stderr => &mut self.stderr,
        }
    }

    /// Bytes held back, not yet returned in a chunk.
    pub fn pending(&self) -> usize {
        self.stdout.len() + self.stderr.len()
    }

    /// Adds output; returns the chunks that are full already.
    pub fn push(&mut self, stream: OutputStream, bytes: &[u8]) -> Vec<LogChunk> {
        let max = self.max_bytes;
        let buf = self.buf(stream);
        buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while buf.len() >= max {
            // Up to `max` raw bytes, backed off to a character boundary. Raw
            // invalid bytes grow when replaced, so cut again afterwards.
            let cut = complete_prefix(&buf[..max]);
            let text = String::from_utf8_lossy(&buf[..cut]).into_owned();
            buf.drain(..cut);
            out.extend(split_text(stream, &text, max));
        }
        out
    }

    /// Everything buffered, except an incomplete character at the very end.
    pub fn flush(&mut self) -> Vec<LogChunk> {
        self.take(false)
    }

    /// Everything buffered; the output has ended.
    pub fn finish(&mut self) -> Vec<LogChunk> {
        self.take(true)
    }

    fn take(&mut self, all: bool) -> Vec<LogChunk> {
        let max = self.max_bytes;
        let mut out = Vec::new();
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let buf = self.buf(stream);
            let cut = if all { buf.len() } else { complete_prefix(buf) };
            if cut == 0 {
                continue;
            }
            let text = String::from_utf8_lossy(&buf[..cut]).into_owned();
            buf.drain(..cut);
            out.extend(split_text(stream, &text, max));
        }
        out
    }
}

/// Length of the longest prefix that does not end inside a valid UTF-8
/// sequence (invalid bytes count as complete: they will be replaced).
fn complete_prefix(bytes: &[u8]) -> usize {
    // A UTF-8 character is at most 4 bytes: only the last 3 can be an
    // incomplete start.
    let start = bytes.len().saturating_sub(3);
    for i in (start..bytes.len()).rev() {
        let b = bytes[i];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // continuation byte
        }
        let need = match b {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        };
        let have = bytes.len() - i;
        return if have < need && std::str::from_utf8(&bytes[i..]).is_err() { i } else { bytes.len() };
    }
    bytes.len()
}

fn split_text(stream: OutputStream, text: &str, max: usize) -> Vec<LogChunk> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(max);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(LogChunk { stream, data: rest[..cut].to_string() });
        rest = &rest[cut..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(chunks: &[LogChunk], stream: OutputStream) -> String {
        chunks.iter().filter(|c| c.stream == stream).map(|c| c.data.as_str()).collect()
    }

    #[test]
    fn small_output_waits_for_flush() {
        let mut c = LogChunker::new(16);
        assert!(c.push(OutputStream::Stdout, b"hello\n").is_empty());
        assert!(c.push(OutputStream::Stderr, b"oops\n").is_empty());
        let out = c.flush();
        assert_eq!(
            out,
            vec![
                LogChunk { stream: OutputStream::Stdout, data: "hello\n".into() },
                LogChunk { stream: OutputStream::Stderr, data: "oops\n".into() },
            ]
        );
        assert_eq!(c.pending(), 0);
        assert!(c.flush().is_empty());
    }

    #[test]
    fn large_output_is_cut_into_bounded_chunks_without_loss() {
        let mut c = LogChunker::new(LogChunker::DEFAULT_MAX_BYTES);
        let text = "é-line of output ✓\n".repeat(5000);
        let mut chunks = Vec::new();
        for piece in text.as_bytes().chunks(1000) {
            chunks.extend(c.push(OutputStream::Stdout, piece));
        }
        chunks.extend(c.finish());
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|ch| ch.data.len() <= LogChunker::DEFAULT_MAX_BYTES));
        assert_eq!(joined(&chunks, OutputStream::Stdout), text);
    }

    #[test]
    fn a_character_split_across_reads_is_kept_whole() {
        let mut c = LogChunker::new(64);
        let bytes = "a✓b".as_bytes();
        // '✓' is 3 bytes: split it after its first byte.
        assert!(c.push(OutputStream::Stdout, &bytes[..2]).is_empty());
        assert_eq!(c.flush(), vec![LogChunk { stream: OutputStream::Stdout, data: "a".into() }]);
        assert_eq!(c.pending(), 1);
        c.push(OutputStream::Stdout, &bytes[2..]);
        assert_eq!(c.flush(), vec![LogChunk { stream: OutputStream::Stdout, data: "✓b".into() }]);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_still_bounded() {
        let mut c = LogChunker::new(8);
        let mut chunks = c.push(OutputStream::Stderr, &[0xff; 20]);
        chunks.extend(c.finish());
        assert!(chunks.iter().all(|ch| ch.data.len() <= 8), "{chunks:?}");
        assert_eq!(joined(&chunks, OutputStream::Stderr).chars().count(), 20);
        assert!(joined(&chunks, OutputStream::Stderr).chars().all(|ch| ch == '\u{fffd}'));
    }

    #[test]
    fn finish_returns_a_dangling_partial_character_as_replacement() {
        let mut c = LogChunker::new(64);
        c.push(OutputStream::Stdout, &"✓".as_bytes()[..2]);
        assert!(c.flush().is_empty());
        assert_eq!(c.finish(), vec![LogChunk { stream: OutputStream::Stdout, data: "\u{fffd}".into() }]);
    }
}
