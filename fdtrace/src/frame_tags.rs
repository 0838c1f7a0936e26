//! Addresses that stand for frames that are not an instruction: non-canonical on x86-64 (the
//! top 16 bits set), so never code; the top 16 bits say what made them. All of fdtrace's in one
//! place, so that no two kinds collide.
use std::hash::{BuildHasher as _, Hash};

/// A Go goroutine's frames follow: the one that asked for the connection (`go_links`).
pub const GO_REQUESTED: u64 = 0xdead << 48;
/// A Go goroutine's frames follow: the one whose `go` statement started the birth's goroutine.
pub const GO_CREATED: u64 = 0xdeac << 48;
/// A Python frame (`python_stack`).
pub const PYTHON: u64 = 0xdeab << 48;
/// A runtime frame's name in a grouping key (`stacks`).
pub const JIT_KEY: u64 = 0xdeaa << 48;
/// A Java method the interpreter ran, at a line (`runtime_frames`).
pub const JAVA: u64 = 0xdea9 << 48;
/// A Node.js socket's handle was made by the frames that follow (`uv_links`).
pub const UV_REQUESTED: u64 = 0xdea8 << 48;

/// The low 48 bits.
pub const LOW_BITS: u64 = 0xffff_ffff_ffff;

/// `tag` with the low 48 bits of a hash of `what` (seeded by the tag: the same value under
/// two tags gives two addresses).
pub fn hashed(tag: u64, what: &impl Hash) -> u64 {
    tag | (foldhash::fast::FixedState::with_seed(tag).hash_one(what) & LOW_BITS)
}
