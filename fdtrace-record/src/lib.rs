//! The on-disk recording format of fdtrace (`fdtrace record -o FILE`, `fdtrace report FILE`).
//!
//! A recording is a versioned [`Header`] followed by a stream of [`Record`]s, stored in
//! zstd-compressed blocks, each with a CRC32. The exact byte layout is in `docs/FORMAT.md`.
//!
//! - [`Writer`] buffers records and writes a block when its buffer is full or on
//!   [`Writer::flush`]; a recorder that dies (SIGKILL, power loss, full disk) leaves a file
//!   whose complete blocks are all readable.
//! - [`Reader`] checks the header, then iterates the records. A file cut inside a block ends
//!   the iteration with [`Reader::tail`] = [`Tail::Truncated`]; damaged or foreign data gives a
//!   [`ReadError`] whose message is one line naming the byte offset and what was expected.
//!
//! This crate does no I/O beyond the `Write`/`Read` it is given (and opening the file in
//! [`Writer::create`] / [`Reader::open`]).
//!
//! ```
//! use fdtrace_record::{Header, Reader, Record, Tail, Writer};
//!
//! let header = Header { fdtrace_version: "0.1.0".into(), target: "pid 42".into(), ..Default::default() };
//! let mut w = Writer::new(Vec::new(), &header)?;
//! w.write(&Record::Open {
//!     ts_ns: 1_000, tgid: 42, tid: 42, fd: 3, kind: 1, syscall: 1, cloexec: true,
//!     stack: None, target: "/etc/hosts".into(),
//! })?;
//! w.write(&Record::Close { ts_ns: 2_000, tgid: 42, tid: 42, fd: 3 })?;
//! let bytes = w.finish()?;
//!
//! let mut r = Reader::new(&bytes[..])?;
//! assert_eq!(r.header().target, "pid 42");
//! let records = r.by_ref().collect::<Result<Vec<_>, _>>()?;
//! assert_eq!(records.len(), 2);
//! assert_eq!(records[1].ts_ns(), Some(2_000));
//! assert_eq!(*r.tail(), Tail::Complete);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod codec;
mod error;
mod reader;
mod record;
mod values;
mod writer;

pub use error::{ErrorKind, Location, ReadError, Tail};
pub use reader::Reader;
pub use record::{CompactString, Container, Header, NofileLimit, ProcFd, Record, SymFrame};
pub use writer::Writer;

/// The first 8 bytes of every recording.
pub const MAGIC: [u8; 8] = *b"FDTRACE\0";
/// Major format version: a reader refuses any other. Bumped for incompatible changes.
pub const FORMAT_MAJOR: u16 = 1;
/// Minor format version written by this crate. A newer minor only appends: new record tags
/// (skipped by older readers, with [`ReadError::UnknownRecord`]) and new trailing fields in the
/// header or a record (ignored by older readers).
pub const FORMAT_MINOR: u16 = 2;
/// The first 4 bytes of every block.
pub const BLOCK_MAGIC: [u8; 4] = *b"FDBK";
/// Bytes of the fixed file prefix: magic, version, header length and checksum.
pub const FILE_PREFIX_LEN: usize = 20;
/// Bytes of a block's frame header.
pub const BLOCK_HEADER_LEN: usize = 24;
/// Largest header body a reader accepts (and a writer writes).
pub const MAX_HEADER_BODY: usize = 1 << 20;
/// Largest compressed or uncompressed block a reader accepts.
pub const MAX_BLOCK_LEN: usize = 16 << 20;
/// Largest encoded record (without its framing) a writer accepts.
pub const MAX_RECORD_BODY: usize = 4 << 20;
/// Default uncompressed size at which the writer writes a block.
pub const DEFAULT_BLOCK_SIZE: usize = 64 << 10;
/// Largest block size [`Writer::set_block_size`] accepts. With [`MAX_RECORD_BODY`] this keeps
/// every block (even incompressible) under [`MAX_BLOCK_LEN`].
pub const MAX_BLOCK_SIZE: usize = 8 << 20;

// The tracer moves the writer into its event task, and a report may read on a worker thread.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Writer<std::fs::File>>();
    assert_send::<Reader<std::io::BufReader<std::fs::File>>>();
};
