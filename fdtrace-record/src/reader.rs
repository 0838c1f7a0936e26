//! Reading a recording.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::codec::{self, BlockDecoder, DecodeError, Decoded};
use crate::error::{Location, ReadError, Tail};
use crate::record::{Header, Record};
use crate::{
    BLOCK_HEADER_LEN, BLOCK_MAGIC, FILE_PREFIX_LEN, FORMAT_MAJOR, FORMAT_MINOR, MAGIC,
    MAX_BLOCK_LEN, MAX_HEADER_BODY,
};

/// Checksums are not checked in fuzzing builds (`--cfg fuzzing`, set by cargo-fuzz), so the
/// fuzzer's mutations reach the decompressor and the record decoder.
const SKIP_CRC: bool = cfg!(fuzzing);

/// Reads a recording: the header at once, then the records through [`Iterator`].
///
/// The iterator yields `Ok(record)` for each record, in the order written. It ends (`None`):
/// - at the end of the file; [`Reader::tail`] then says whether the file ended cleanly after a
///   block ([`Tail::Complete`]) or inside one ([`Tail::Truncated`]: the recorder was cut off,
///   every record before the cut has been returned);
/// - after yielding a fatal `Err` (damaged data or an I/O error); [`Reader::tail`] is then
///   [`Tail::Stopped`].
///
/// `Err(ReadError::UnknownRecord { .. })` (a record type from a newer minor format version) is
/// not fatal: the record is skipped and iteration goes on. The records of a damaged block that
/// were decoded before the damage are returned before the error.
///
/// Reading never panics and never allocates more than [`MAX_BLOCK_LEN`] per buffer, whatever
/// the input.
pub struct Reader<R: Read> {
    inner: R,
    header: Header,
    version: (u16, u16),
    /// Bytes consumed from `inner`: the end of the last complete block.
    offset: u64,
    block: Option<Block>,
    tail: Tail,
    blocks_read: u64,
    decompressor: zstd::bulk::Decompressor<'static>,
    /// Compressed bytes of the block being read.
    payload: Vec<u8>,
}

/// The block whose records are being returned.
struct Block {
    offset: u64,
    count: u32,
    decoded: u32,
    dec: BlockDecoder,
}

impl Reader<BufReader<File>> {
    /// Opens the recording at `path` and reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ReadError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| ReadError::Open {
            path: path.to_owned(),
            source,
        })?;
        Reader::new(BufReader::with_capacity(256 * 1024, file))
    }
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn corrupt(at: Location, expected: impl Into<String>, found: impl Into<String>) -> ReadError {
    ReadError::Corrupt {
        at,
        expected: expected.into(),
        found: one_line(found.into()),
    }
}

/// Messages from other libraries go into a one-line error: no control characters.
fn one_line(s: String) -> String {
    if s.chars().any(char::is_control) {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    } else {
        s
    }
}

impl<R: Read> Reader<R> {
    /// Reads and checks the file header from `inner`, leaving it at the first block.
    pub fn new(mut inner: R) -> Result<Self, ReadError> {
        let io_err = |offset| move |source| ReadError::Io { offset, source };
        let mut prefix = [0u8; FILE_PREFIX_LEN];
        let n = read_full(&mut inner, &mut prefix).map_err(io_err(0))?;
        let m = n.min(MAGIC.len());
        if prefix[..m] != MAGIC[..m] {
            return Err(ReadError::NotRecording {
                found: prefix[..m].to_vec(),
            });
        }
        let truncated = |len| ReadError::TruncatedHeader {
            expected: FILE_PREFIX_LEN as u64,
            len: len as u64,
        };
        if n < 12 {
            return Err(truncated(n));
        }
        let major = u16::from_le_bytes([prefix[8], prefix[9]]);
        let minor = u16::from_le_bytes([prefix[10], prefix[11]]);
        if major != FORMAT_MAJOR {
            return Err(ReadError::UnsupportedVersion { major, minor });
        }
        if n < FILE_PREFIX_LEN {
            return Err(truncated(n));
        }
        let body_len = le32(&prefix[12..16]);
        if body_len as usize > MAX_HEADER_BODY {
            return Err(corrupt(
                Location::Offset(12),
                format!("a header length of at most {MAX_HEADER_BODY}"),
                body_len.to_string(),
            ));
        }
        let mut body = Vec::new();
        (&mut inner)
            .take(body_len.into())
            .read_to_end(&mut body)
            .map_err(io_err(FILE_PREFIX_LEN as u64))?;
        let total = FILE_PREFIX_LEN as u64 + u64::from(body_len);
        if body.len() < body_len as usize {
            return Err(ReadError::TruncatedHeader {
                expected: total,
                len: (FILE_PREFIX_LEN + body.len()) as u64,
            });
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&prefix[8..16]);
        crc.update(&body);
        let (want, got) = (le32(&prefix[16..20]), crc.finalize());
        if want != got && !SKIP_CRC {
            return Err(corrupt(
                Location::Offset(16),
                format!(
                    "header checksum {want:#010x} (over bytes 8..16 and {FILE_PREFIX_LEN}..{total})"
                ),
                format!("data with checksum {got:#010x}"),
            ));
        }
        let header = codec::decode_header(&body, minor > FORMAT_MINOR).map_err(|e| {
            corrupt(
                Location::Offset(FILE_PREFIX_LEN as u64 + e.pos as u64),
                e.expected,
                e.found,
            )
        })?;
        Ok(Reader {
            inner,
            header,
            version: (major, minor),
            offset: total,
            block: None,
            tail: Tail::Pending,
            blocks_read: 0,
            decompressor: zstd::bulk::Decompressor::new().map_err(io_err(total))?,
            payload: Vec::new(),
        })
    }

    /// The recording's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file's format version `(major, minor)`.
    pub fn version(&self) -> (u16, u16) {
        self.version
    }

    /// How the file ended; [`Tail::Pending`] until the iterator has returned `None`.
    pub fn tail(&self) -> &Tail {
        &self.tail
    }

    /// Bytes of the file read and checked so far: the end of the last complete block read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Complete blocks read so far.
    pub fn blocks_read(&self) -> u64 {
        self.blocks_read
    }

    /// Reads the next block. `Ok(None)` at the end of the file, with `tail` set.
    fn read_block(&mut self) -> Result<Option<Block>, ReadError> {
        let start = self.offset;
        let io_err = |source| ReadError::Io {
            offset: start,
            source,
        };
        let mut h = [0u8; BLOCK_HEADER_LEN];
        let n = read_full(&mut self.inner, &mut h).map_err(io_err)?;
        if n == 0 {
            self.tail = Tail::Complete;
            return Ok(None);
        }
        let m = n.min(BLOCK_MAGIC.len());
        if h[..m] != BLOCK_MAGIC[..m] {
            return Err(corrupt(
                Location::Offset(start),
                "block magic \"FDBK\"",
                format!("\"{}\"", h[..m].escape_ascii()),
            ));
        }
        if n < BLOCK_HEADER_LEN {
            self.tail = Tail::Truncated {
                offset: start,
                expected: BLOCK_HEADER_LEN as u64,
                available: n as u64,
            };
            return Ok(None);
        }
        let (want, got) = (le32(&h[20..24]), crc32fast::hash(&h[0..20]));
        if want != got && !SKIP_CRC {
            return Err(corrupt(
                Location::Offset(start + 20),
                format!("block header checksum {want:#010x}"),
                format!("a block header with checksum {got:#010x}"),
            ));
        }
        let comp_len = le32(&h[4..8]);
        let uncomp_len = le32(&h[8..12]);
        let count = le32(&h[12..16]);
        for (at, what, v) in [(4, "compressed", comp_len), (8, "uncompressed", uncomp_len)] {
            if v as usize > MAX_BLOCK_LEN {
                return Err(corrupt(
                    Location::Offset(start + at),
                    format!("a {what} block length of at most {MAX_BLOCK_LEN}"),
                    v.to_string(),
                ));
            }
        }
        self.payload.clear();
        (&mut self.inner)
            .take(comp_len.into())
            .read_to_end(&mut self.payload)
            .map_err(io_err)?;
        let expected = (BLOCK_HEADER_LEN as u64) + u64::from(comp_len);
        if self.payload.len() < comp_len as usize {
            self.tail = Tail::Truncated {
                offset: start,
                expected,
                available: (BLOCK_HEADER_LEN + self.payload.len()) as u64,
            };
            return Ok(None);
        }
        let data_at = start + BLOCK_HEADER_LEN as u64;
        let (want, got) = (le32(&h[16..20]), crc32fast::hash(&self.payload));
        if want != got && !SKIP_CRC {
            return Err(corrupt(
                Location::Offset(data_at),
                format!("{comp_len} bytes of block data with checksum {want:#010x}"),
                format!("checksum {got:#010x}"),
            ));
        }
        let data = self
            .decompressor
            .decompress(&self.payload, uncomp_len as usize)
            .map_err(|e| {
                corrupt(
                    Location::Offset(data_at),
                    format!("a zstd frame of {uncomp_len} bytes"),
                    format!("undecodable data ({e})"),
                )
            })?;
        if data.len() != uncomp_len as usize {
            return Err(corrupt(
                Location::Offset(data_at),
                format!("a zstd frame of {uncomp_len} bytes"),
                format!("one of {} bytes", data.len()),
            ));
        }
        self.offset = start + expected;
        self.blocks_read += 1;
        Ok(Some(Block {
            offset: start,
            count,
            decoded: 0,
            dec: BlockDecoder::new(data, self.version.1 > FORMAT_MINOR),
        }))
    }

    /// The next record of the current block, or `None` when the block is done.
    fn next_in_block(block: &mut Block, minor: u16) -> Option<Result<Record, ReadError>> {
        let at = |byte: usize, record: u32| Location::InBlock {
            block_offset: block.offset,
            record: record.into(),
            byte: byte as u64,
        };
        if block.dec.is_empty() {
            if block.decoded != block.count {
                return Some(Err(corrupt(
                    at(block.dec.pos(), block.decoded),
                    format!("{} records in the block", block.count),
                    format!("the end of its data after {}", block.decoded),
                )));
            }
            return None;
        }
        if block.decoded == block.count {
            return Some(Err(corrupt(
                at(block.dec.pos(), block.decoded),
                format!("the end of the block after {} records", block.count),
                "more data",
            )));
        }
        let index = block.decoded;
        let start = block.dec.pos();
        block.decoded += 1;
        Some(match block.dec.next() {
            Ok(Decoded::Record(r)) => Ok(r),
            Ok(Decoded::Unknown { tag, ts_ns }) => Err(ReadError::UnknownRecord {
                at: at(start, index),
                tag,
                ts_ns,
                file_minor: minor,
            }),
            Err(DecodeError {
                pos,
                expected,
                found,
            }) => Err(corrupt(at(pos, index), expected, found)),
        })
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<Record, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.tail != Tail::Pending {
                return None;
            }
            if let Some(block) = &mut self.block {
                match Self::next_in_block(block, self.version.1) {
                    None => self.block = None,
                    Some(item) => {
                        if let Err(e) = &item
                            && e.is_fatal()
                        {
                            self.tail = Tail::Stopped {
                                offset: block.offset,
                            };
                            self.block = None;
                        }
                        return Some(item);
                    }
                }
                continue;
            }
            match self.read_block() {
                Ok(Some(block)) => self.block = Some(block),
                Ok(None) => return None,
                Err(e) => {
                    self.tail = Tail::Stopped {
                        offset: self.offset,
                    };
                    return Some(Err(e));
                }
            }
        }
    }
}

impl<R: Read> std::fmt::Debug for Reader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("header", &self.header)
            .field("version", &self.version)
            .field("offset", &self.offset)
            .field("blocks_read", &self.blocks_read)
            .field("tail", &self.tail)
            .finish_non_exhaustive()
    }
}
