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
    unwind::{RuntimeFrame, Unwound},
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
        let (unwound, mut names) = self.java_frames(unwound, &is_jit);
        let (unwound, python) = self.python.splice_into(tid, sp, unwound);
        names.extend(python);
        let named: std::collections::HashSet<u64> = names.iter().map(|(a, _)| *a).collect();
        names.extend(self.jit_names(&unwound, is_jit, &named));
        (unwound, names)
    }

    /// The Java frames of a stack, read from the JVM: those its interpreter runs (by the method
    /// and bytecode pointer the frame keeps) and compiled ones (by the debug information of the
    /// call, one frame per method the JIT inlined there), each named as its method and line.
    /// Each gets an address of its own: the interpreter's code is the same for every method,
    /// and a method is one frame whichever tier runs it.
    fn java_frames(
        &mut self,
        mut unwound: Unwound,
        is_jit: &impl Fn(u64) -> bool,
    ) -> (Unwound, Vec<(u64, JitName)>) {
        let slots = std::mem::take(&mut unwound.jit_slots);
        if slots.is_empty() && !unwound.frames.iter().any(|f| is_jit(f.lookup)) {
            return (unwound, Vec::new());
        }
        let Some(vm) = self.vm() else {
            return (unwound, Vec::new());
        };
        let mut names = Vec::new();
        let mut frames = Vec::with_capacity(unwound.frames.len());
        let mut slots = slots.into_iter().peekable();
        for (i, f) in unwound.frames.iter().enumerate() {
            let slot = slots.next_if(|s| s.0 == i);
            let java = if !is_jit(f.lookup) {
                None
            } else if vm.is_interpreter(f.lookup) {
                slot.and_then(|(_, method, bcp)| vm.frame(method, bcp))
                    .map(|j| vec![j])
            } else {
                // A return address (not the first frame): the call's own debug information.
                (i > 0).then(|| vm.compiled(f.addr)).flatten()
            };
            let Some(java) = java.filter(|j| !j.is_empty()) else {
                if i > 0
                    && is_jit(f.lookup)
                    && let Some(stub) = vm.stub_name(f.addr)
                {
                    names.push((
                        f.addr,
                        JitName {
                            function: stub,
                            file: None,
                            line: None,
                            program: false,
                            module: crate::runtime::JIT_MODULE,
                            inlined: false,
                        },
                    ));
                }
                frames.push(*f);
                continue;
            };
            let last = java.len() - 1;
            for (k, j) in java.into_iter().enumerate() {
                let addr = crate::frame_tags::hashed(crate::frame_tags::JAVA, &j);
                frames.push(crate::unwind::RawFrame { addr, lookup: addr });
                names.push((
                    addr,
                    JitName {
                        program: !crate::runtime::is_jdk_method(&j.function),
                        function: j.function,
                        file: j.file,
                        line: j.line,
                        module: crate::runtime::JAVA_MODULE,
                        // Compiled: each method but the last was inlined into the next.
                        inlined: k < last,
                    },
                ));
            }
        }
        unwound.frames = frames;
        (unwound, names)
    }

    /// The JVM's structures, looked for once (at the first JIT frame: by then a JVM is up).
    fn vm(&mut self) -> Option<&mut JavaVm> {
        if self.java_vm.is_none() {
            let vm = JavaVm::find(self.pid);
            self.java.set_vm_readable(self.pid, vm.is_some());
            self.java_vm = Some(vm);
        }
        self.java_vm.as_mut()?.as_mut()
    }

    /// What a return address `pc` into JIT code returns into, for the unwinder: HotSpot's
    /// compiled code or interpreter, as the JVM describes them.
    pub fn jit_frame(&mut self, pc: u64) -> RuntimeFrame {
        let Some(vm) = self.vm() else {
            return RuntimeFrame::Unknown;
        };
        if vm.is_interpreter(pc - 1) {
            RuntimeFrame::Interpreted
        } else if let Some(bytes) = vm.compiled_frame_bytes(pc) {
            RuntimeFrame::Compiled { bytes }
        } else {
            RuntimeFrame::Unknown
        }
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

    /// The names of a stack's JIT frames not `named` yet, from the runtime's perf map (looked
    /// for at most once a second while the process has none).
    fn jit_names(
        &mut self,
        unwound: &Unwound,
        is_jit: impl Fn(u64) -> bool,
        named: &std::collections::HashSet<u64>,
    ) -> Vec<(u64, JitName)> {
        let in_jit: Vec<_> = unwound
            .frames
            .iter()
            .filter(|f| is_jit(f.lookup) && !named.contains(&f.addr))
            .collect();
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
