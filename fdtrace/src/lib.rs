//! fdtrace: find the exact line of code that leaks file descriptors, live, with eBPF.
pub mod cli;
pub mod events;
pub mod kernel_layout;
pub mod launch;
pub mod live;
pub mod model;
pub mod offline;
pub mod procinfo;
pub mod recording;
pub mod report;
pub mod session;
pub mod sockets;
pub mod stacks;
pub mod symbolize;
pub mod tracer;
pub mod unwind;
pub mod verdict;
