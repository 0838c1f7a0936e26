//! A traced process's frames in its language runtime's terms, one per process: JIT frames
//! named from the runtime's perf map (Node.js; Java, whose map fdtrace asks the JVM for), Java
//! frames the JVM's interpreter runs (read from the JVM) and Python frames read from the
//! interpreter, put into its native stacks.
use std::time::{Duration, Instant};

use fdtrace_common::PyLayout;

use crate::{
    java_attach::PerfMapRequests,
    java_vm::JavaVm,
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
    /// HotSpot: the JVM's description of itself, looked for once (at the first JIT frame).
    java_vm: Option<Option<JavaVm>>,
}

impl RuntimeFrames {
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            perf_map: None,
            perf_map_sought: None,
            python: Default::default(),
            java: Default::default(),
            java_vm: None,
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
        self.java_vm = None;
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
        let (unwound, mut names) = self.interpreted_java(unwound);
        let (unwound, python) = self.python.splice_into(tid, sp, unwound);
        names.extend(python);
        names.extend(self.jit_names(&unwound, is_jit));
        (unwound, names)
    }

    /// The frames of a stack that HotSpot's interpreter runs, named as their method and line
    /// (each gets an address of its own: the interpreter's code is the same for every method).
    fn interpreted_java(&mut self, mut unwound: Unwound) -> (Unwound, Vec<(u64, JitName)>) {
        let slots = std::mem::take(&mut unwound.jit_slots);
        if slots.is_empty() {
            return (unwound, Vec::new());
        }
        let pid = self.pid;
        let Some(vm) = self.java_vm.get_or_insert_with(|| JavaVm::find(pid)) else {
            return (unwound, Vec::new());
        };
        let mut names = Vec::new();
        for (i, method, bcp) in slots {
            let Some(f) = unwound.frames.get_mut(i) else {
                continue;
            };
            if !vm.is_interpreter(f.lookup) {
                continue;
            }
            let Some(j) = vm.frame(method, bcp) else {
                continue;
            };
            let addr = crate::frame_tags::hashed(crate::frame_tags::JAVA, &j);
            *f = crate::unwind::RawFrame { addr, lookup: addr };
            names.push((
                addr,
                JitName {
                    program: !crate::runtime::is_jdk_method(&j.function),
                    function: j.function,
                    file: j.file,
                    line: j.line,
                    module: crate::runtime::JAVA_MODULE,
                },
            ));
        }
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
