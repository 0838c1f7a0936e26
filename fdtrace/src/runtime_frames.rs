//! A traced process's frames in its language runtime's terms, one per process: JIT frames
//! named from the runtime's perf map (Node.js; Java, whose map fdtrace asks the JVM for) and
//! Python frames read from the interpreter, put into its native stacks.
use std::time::{Duration, Instant};

use fdtrace_common::PyLayout;

use crate::{
    java_attach::PerfMapRequests,
    python_stack::PythonProc,
    runtime::{JitName, PerfMap},
    stacks::StackStore,
    unwind::Unwound,
};

pub struct RuntimeFrames {
    pid: u32,
    /// The runtime's perf map, and when it was last looked for.
    perf_map: Option<PerfMap>,
    perf_map_sought: Option<Instant>,
    /// CPython: the interpreter and the Python frames sent before each birth.
    pub python: PythonProc,
    /// HotSpot: the perf maps fdtrace asked the JVM for.
    pub java: PerfMapRequests,
}

impl RuntimeFrames {
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            perf_map: None,
            perf_map_sought: None,
            python: Default::default(),
            java: Default::default(),
        }
    }

    /// Called often while tracing: find a Python interpreter, ask a new JVM for its map.
    /// Returns what the kernel must be told of the Python frames (where they are, or to forget
    /// them).
    pub fn tick(&mut self) -> Option<Option<PyLayout>> {
        self.python.seek(self.pid);
        self.java.first(self.pid);
        self.python.tell_kernel.take()
    }

    /// The process exec'd another program.
    pub fn exec(&mut self) {
        self.python.reset();
        self.java.reset();
        self.perf_map = None;
        self.perf_map_sought = None;
    }

    /// The stack of `tid`'s birth at `sp` with the runtime's frames put in, and their names
    /// (`is_jit`: is an address JIT-compiled code).
    pub fn name(
        &mut self,
        tid: u32,
        sp: u64,
        unwound: Unwound,
        is_jit: impl Fn(u64) -> bool,
    ) -> (Unwound, Vec<(u64, JitName)>) {
        let (unwound, mut names) = self.python.splice_into(tid, sp, unwound);
        names.extend(self.jit_names(&unwound, is_jit));
        (unwound, names)
    }

    /// Before a report: name the JIT frames of stacks seen before the runtime's perf map
    /// named their code.
    pub fn name_late(&mut self, stacks: &mut StackStore) {
        if self.perf_map.is_none() {
            self.perf_map = PerfMap::of(self.pid);
        }
        if let Some(map) = self.perf_map.as_mut() {
            stacks.name_jit(|a| map.lookup(a));
        }
    }

    /// The names of a stack's JIT frames, from the runtime's perf map (looked for at most once
    /// a second while the process has none).
    fn jit_names(
        &mut self,
        unwound: &Unwound,
        is_jit: impl Fn(u64) -> bool,
    ) -> Vec<(u64, JitName)> {
        let in_jit: Vec<_> = unwound.frames.iter().filter(|f| is_jit(f.lookup)).collect();
        if in_jit.is_empty() {
            return Vec::new();
        }
        if self.perf_map.is_none()
            && self
                .perf_map_sought
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.perf_map_sought = Some(Instant::now());
            self.perf_map = PerfMap::of(self.pid);
        }
        let Some(map) = self.perf_map.as_mut() else {
            self.java.request(self.pid);
            return Vec::new();
        };
        let named: Vec<_> = in_jit
            .iter()
            .filter_map(|f| map.lookup(f.lookup).map(|n| (f.addr, n)))
            .collect();
        if named.len() < in_jit.len() {
            // A JVM: code compiled since its map was written.
            self.java.request(self.pid);
        }
        named
    }
}
