//! Errors and end-of-file states of the reader.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::{FORMAT_MAJOR, FORMAT_MINOR};

/// Where in a recording a problem was found. Displays as "at offset N" or "in the block at
/// offset N, record R (byte B of its decompressed data)".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// A byte offset in the file.
    Offset(u64),
    /// Inside the decompressed data of the block that starts at byte `block_offset` of the file.
    InBlock {
        block_offset: u64,
        /// Index of the record in the block (0 = first).
        record: u64,
        /// Byte position in the block's decompressed data.
        byte: u64,
    },
}

impl Location {
    /// The file offset: the offset itself, or the start of the block.
    pub fn file_offset(&self) -> u64 {
        match *self {
            Location::Offset(o) => o,
            Location::InBlock { block_offset, .. } => block_offset,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Location::Offset(o) => write!(f, "at offset {o}"),
            Location::InBlock {
                block_offset,
                record,
                byte,
            } => write!(
                f,
                "in the block at offset {block_offset}, record {record} (byte {byte} of its decompressed data)"
            ),
        }
    }
}

/// The broad class of a [`ReadError`], for deciding what to do (e.g. a CLI's exit code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Reading failed at the system level (the file could not be opened, EIO, ...): not a
    /// statement about the file's contents.
    Io,
    /// The bytes are not a valid fdtrace recording: wrong magic, checksum mismatch, undecodable
    /// compressed data or record, a header cut short.
    Damaged,
    /// A recording this reader cannot read: another major format version, or (non-fatal) a
    /// record type added by a newer minor version.
    Unsupported,
}

/// An error while reading a recording. Its `Display` is always one line that names the byte
/// offset and what was expected there.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened.
    #[error("cannot open recording {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The underlying reader failed.
    #[error("cannot read the recording at offset {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// The file does not start with the fdtrace magic.
    #[error(
        "not an fdtrace recording: expected magic \"FDTRACE\\0\" at offset 0, found \"{}\"",
        found.escape_ascii()
    )]
    NotRecording {
        /// The first bytes of the file (up to 8).
        found: Vec<u8>,
    },
    /// The file's major format version is not the one this reader reads.
    #[error(
        "unsupported fdtrace recording format {major}.{minor}: expected format version {FORMAT_MAJOR}.x at offset 8 (this reader knows {FORMAT_MAJOR}.{FORMAT_MINOR})"
    )]
    UnsupportedVersion { major: u16, minor: u16 },
    /// The file ends inside its header: no record can be read.
    #[error(
        "recording cut short: expected a {expected}-byte file header at offset 0, found the end of the file at offset {len}"
    )]
    TruncatedHeader { expected: u64, len: u64 },
    /// Damaged data: a checksum mismatch, bad magic, invalid compressed data or record.
    #[error("damaged recording {at}: expected {expected}, found {found}")]
    Corrupt {
        at: Location,
        expected: String,
        found: String,
    },
    /// A record type this reader does not know, written by a newer minor format version. Not
    /// fatal: the record is skipped and the iterator goes on with the next one.
    #[error(
        "unknown record {at}: tag {tag} is newer than this reader (format {FORMAT_MAJOR}.{FORMAT_MINOR}, file is {FORMAT_MAJOR}.{file_minor}); record skipped"
    )]
    UnknownRecord {
        at: Location,
        tag: u64,
        /// The record's timestamp, when it has one.
        ts_ns: Option<u64>,
        file_minor: u16,
    },
}

impl ReadError {
    /// The class of the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReadError::Open { .. } | ReadError::Io { .. } => ErrorKind::Io,
            ReadError::NotRecording { .. }
            | ReadError::TruncatedHeader { .. }
            | ReadError::Corrupt { .. } => ErrorKind::Damaged,
            ReadError::UnsupportedVersion { .. } | ReadError::UnknownRecord { .. } => {
                ErrorKind::Unsupported
            }
        }
    }

    /// Is the problem in the file's contents (damaged, not a recording, or unsupported), as
    /// opposed to the system failing to read it? A CLI maps these to exit code 2.
    pub fn is_damaged(&self) -> bool {
        self.kind() != ErrorKind::Io
    }

    /// Does reading stop here? Only [`ReadError::UnknownRecord`] lets the iterator go on.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, ReadError::UnknownRecord { .. })
    }

    /// The file offset the error refers to (for errors inside a block: the block's start).
    pub fn offset(&self) -> u64 {
        match self {
            ReadError::Open { .. } | ReadError::NotRecording { .. } => 0,
            ReadError::UnsupportedVersion { .. } => 8,
            ReadError::Io { offset, .. } => *offset,
            ReadError::TruncatedHeader { len, .. } => *len,
            ReadError::Corrupt { at, .. } | ReadError::UnknownRecord { at, .. } => at.file_offset(),
        }
    }
}

/// How the file ended, as far as the reader got ([`crate::Reader::tail`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// The reader has not reached the end yet.
    Pending,
    /// The file ends right after a complete block: nothing was cut.
    Complete,
    /// The file ends inside a block: the recorder stopped while writing it (killed, power loss,
    /// disk full). Every record before `offset` was read.
    Truncated {
        /// File offset where the incomplete block starts.
        offset: u64,
        /// Bytes the block needs: its 24-byte frame header, plus the compressed data once the
        /// frame header is complete.
        expected: u64,
        /// Bytes present from `offset` to the end of the file (less than `expected`).
        available: u64,
    },
    /// Reading stopped at a fatal error (returned by the iterator) about the block at `offset`.
    Stopped { offset: u64 },
}

impl fmt::Display for Tail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Tail::Pending => write!(f, "not read to the end"),
            Tail::Complete => write!(f, "complete"),
            Tail::Truncated {
                offset,
                expected,
                available,
            } => write!(
                f,
                "recording cut at byte {offset}: expected a block of {expected} bytes there, found {available}; everything before is complete"
            ),
            Tail::Stopped { offset } => {
                write!(f, "reading stopped at damaged data at byte {offset}")
            }
        }
    }
}
