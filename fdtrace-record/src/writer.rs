//! Writing a recording.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::codec::{self, BlockEncoder};
use crate::record::{Header, Record};
use crate::{
    BLOCK_HEADER_LEN, BLOCK_MAGIC, DEFAULT_BLOCK_SIZE, FORMAT_MAJOR, FORMAT_MINOR, MAGIC,
    MAX_BLOCK_SIZE, MAX_HEADER_BODY, MAX_RECORD_BODY,
};

/// zstd level: fast enough for a live tracer, and repetitive event streams compress well.
const ZSTD_LEVEL: i32 = 3;

/// Writes a recording: the file header at once, then records in compressed, checksummed blocks.
///
/// Records are buffered and written as one block when the buffer reaches the block size
/// ([`DEFAULT_BLOCK_SIZE`] uncompressed, see [`Writer::set_block_size`]) or when
/// [`Writer::flush`] is called. A block is written with a single `write_all`, so if the process
/// dies or the disk fills up, the file holds every earlier block intact and at most one cut
/// block at its end, which the reader reports as [`crate::Tail::Truncated`].
///
/// Errors are returned, never panics. After an I/O error the writer is stopped: every later
/// call fails with an error of the same [`io::ErrorKind`], and the buffered records are lost.
///
/// Dropping a writer that was not [`finish`](Writer::finish)ed flushes it, ignoring errors.
pub struct Writer<W: Write> {
    /// `None` only after `finish`.
    inner: Option<W>,
    enc: BlockEncoder,
    /// Framed, uncompressed records of the block being filled.
    buf: Vec<u8>,
    /// Records in `buf`.
    buffered: u32,
    block_size: usize,
    compressor: zstd::bulk::Compressor<'static>,
    /// Frame header + compressed data of the block being written.
    out: Vec<u8>,
    bytes_written: u64,
    records_written: u64,
    /// The first I/O error: its kind and message.
    failed: Option<(io::ErrorKind, String)>,
}

impl Writer<File> {
    /// Creates the recording file `path` with mode 0600 and writes the header.
    ///
    /// The file must not exist (`O_CREAT | O_EXCL`): an existing file or symlink there is an
    /// [`io::ErrorKind::AlreadyExists`] error. This keeps a recorder running as root from
    /// following a planted symlink or keeping the looser mode of an existing file; a caller
    /// that wants to overwrite removes the old file first.
    pub fn create(path: impl AsRef<Path>, header: &Header) -> io::Result<Writer<File>> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        Writer::new(file, header)
    }

    /// Flushes like [`Writer::flush`], then asks the kernel to put the data on disk
    /// (`fdatasync`).
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        let r = self.inner_mut().sync_data();
        r.map_err(|e| self.fail(e))
    }
}

impl<W: Write> Writer<W> {
    /// Starts a recording on `inner`: writes the file header and flushes `inner`.
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] if the encoded header exceeds 1 MiB.
    pub fn new(mut inner: W, header: &Header) -> io::Result<Self> {
        let mut body = Vec::new();
        codec::encode_header(header, &mut body);
        if body.len() > MAX_HEADER_BODY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "recording header is {} bytes encoded, at most {MAX_HEADER_BODY} allowed",
                    body.len()
                ),
            ));
        }
        let mut out = Vec::with_capacity(crate::FILE_PREFIX_LEN + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_MAJOR.to_le_bytes());
        out.extend_from_slice(&FORMAT_MINOR.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&out[8..16]);
        crc.update(&body);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(&body);
        inner.write_all(&out)?;
        inner.flush()?;
        Ok(Writer {
            inner: Some(inner),
            enc: BlockEncoder::default(),
            buf: Vec::new(),
            buffered: 0,
            block_size: DEFAULT_BLOCK_SIZE,
            compressor: zstd::bulk::Compressor::new(ZSTD_LEVEL)?,
            out: Vec::new(),
            bytes_written: out.len() as u64,
            records_written: 0,
            failed: None,
        })
    }

    /// Sets the uncompressed size at which a block is written (clamped to 1 byte ..
    /// [`MAX_BLOCK_SIZE`]). Larger blocks compress better; smaller ones lose less on a crash
    /// between flushes.
    pub fn set_block_size(&mut self, bytes: usize) {
        self.block_size = bytes.clamp(1, MAX_BLOCK_SIZE);
    }

    /// Appends a record. It reaches `inner` with its block: when the block is full, or at the
    /// next [`flush`](Writer::flush).
    ///
    /// A record whose encoding exceeds [`MAX_RECORD_BODY`] is refused with
    /// [`io::ErrorKind::InvalidInput`]; the writer stays usable.
    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        self.check()?;
        if let Err(size) = self.enc.encode(record, MAX_RECORD_BODY, &mut self.buf) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} record is {size} bytes encoded, at most {MAX_RECORD_BODY} allowed",
                    record.name()
                ),
            ));
        }
        self.buffered += 1;
        if self.buf.len() >= self.block_size {
            self.write_block()?;
        }
        Ok(())
    }

    /// Writes the buffered records as a block (if there are any) and flushes `inner`.
    ///
    /// Call it periodically and before exiting: on return, every record written so far is in a
    /// complete block that a reader can read even if this process is killed right after.
    pub fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        if self.buffered > 0 {
            self.write_block()?;
        }
        let r = self.inner_mut().flush();
        r.map_err(|e| self.fail(e))
    }

    /// Flushes and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.inner.take().expect("inner is only taken here"))
    }

    /// Bytes handed to the inner writer so far (file header and complete blocks).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Records in the blocks handed to the inner writer so far.
    pub fn records_written(&self) -> u64 {
        self.records_written
    }

    /// Records buffered for the next block.
    pub fn buffered_records(&self) -> u64 {
        self.buffered.into()
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        self.inner.as_ref().expect("inner is only taken by finish")
    }

    fn inner_mut(&mut self) -> &mut W {
        self.inner.as_mut().expect("inner is only taken by finish")
    }

    /// Fails if an earlier I/O error stopped the writer.
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            None => Ok(()),
            Some((kind, msg)) => Err(io::Error::new(
                *kind,
                format!("recording writer stopped after an earlier error: {msg}"),
            )),
        }
    }

    /// Remembers `e` as the error that stopped the writer, and returns it.
    fn fail(&mut self, e: io::Error) -> io::Error {
        self.failed = Some((e.kind(), e.to_string()));
        e
    }

    /// Compresses `buf` and writes it as one block.
    fn write_block(&mut self) -> io::Result<()> {
        let compressed = match self.compressor.compress(&self.buf) {
            Ok(c) => c,
            Err(e) => return Err(self.fail(e)),
        };
        let mut hdr = [0u8; BLOCK_HEADER_LEN];
        hdr[0..4].copy_from_slice(&BLOCK_MAGIC);
        hdr[4..8].copy_from_slice(&(compressed.len() as u32).to_le_bytes());
        hdr[8..12].copy_from_slice(&(self.buf.len() as u32).to_le_bytes());
        hdr[12..16].copy_from_slice(&self.buffered.to_le_bytes());
        hdr[16..20].copy_from_slice(&crc32fast::hash(&compressed).to_le_bytes());
        let hcrc = crc32fast::hash(&hdr[0..20]);
        hdr[20..24].copy_from_slice(&hcrc.to_le_bytes());
        self.out.clear();
        self.out.extend_from_slice(&hdr);
        self.out.extend_from_slice(&compressed);

        let r = self
            .inner
            .as_mut()
            .expect("inner is only taken by finish")
            .write_all(&self.out);
        if let Err(e) = r {
            return Err(self.fail(e));
        }
        self.bytes_written += self.out.len() as u64;
        self.records_written += u64::from(self.buffered);
        self.buf.clear();
        self.buffered = 0;
        self.enc.reset();
        Ok(())
    }
}

impl<W: Write> Drop for Writer<W> {
    fn drop(&mut self) {
        if self.inner.is_some() && self.failed.is_none() {
            let _ = self.flush();
        }
    }
}

impl<W: Write> std::fmt::Debug for Writer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("bytes_written", &self.bytes_written)
            .field("records_written", &self.records_written)
            .field("buffered", &self.buffered)
            .field("block_size", &self.block_size)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}
