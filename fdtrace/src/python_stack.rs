//! Python frames in a birth's stack: the frames the kernel read from the interpreter
//! (`kind::PY_FRAMES`, sent just before the birth by the same thread) wait here for their
//! birth, then take the place of the interpreter's evaluation-loop frames in the native stack,
//! as a Python traceback would show them, with the native frames around them.
use fdtrace_common::{PyFrame, py};

use crate::{
    python_code::{Named, PY_MODULE},
    runtime::JitName,
    unwind::{RawFrame, Unwound},
};

/// Frames waiting for their birth, per thread (a thread has one birth in flight).
#[derive(Default)]
pub struct PendingFrames {
    pending: foldhash::HashMap<u32, (u64, Vec<PyFrame>, bool)>,
}

/// More threads with frames waiting than this: they are stale (their births were lost).
const MAX_THREADS: usize = 4096;

impl PendingFrames {
    pub fn on_frames(&mut self, tid: u32, sp: u64, frames: Vec<PyFrame>, truncated: bool) {
        if self.pending.len() >= MAX_THREADS && !self.pending.contains_key(&tid) {
            self.pending.clear();
        }
        self.pending.insert(tid, (sp, frames, truncated));
    }

    /// Whether frames wait for a birth of `tid`.
    pub fn waits_on(&self, tid: u32) -> bool {
        self.pending.contains_key(&tid)
    }

    /// The frames of `tid`'s birth at `sp`, if they came.
    pub fn take(&mut self, tid: u32, sp: u64) -> Option<(Vec<PyFrame>, bool)> {
        let (at, frames, truncated) = self.pending.remove(&tid)?;
        (at == sp).then_some((frames, truncated))
    }
}

/// The Python side of a traced process: its interpreter once found, and the frames waiting for
/// their births.
#[derive(Default)]
pub struct PythonProc {
    found: Option<(crate::python::Interpreter, crate::python_code::CodeReader)>,
    /// When the interpreter was last looked for (a shared libpython may not be loaded yet).
    sought: Option<std::time::Instant>,
    /// Why its frames cannot be read (said once).
    pub unsupported: Option<crate::python::Unsupported>,
    pending: PendingFrames,
    /// Is the process's executable a Python interpreter (read once per program)?
    is_python: Option<bool>,
    /// What the kernel must be told: where the frames are (Some), or to forget them (None).
    pub tell_kernel: Option<Option<fdtrace_common::PyLayout>>,
}

impl PythonProc {
    /// Look for the interpreter of `pid` (a Python process), at most once a second until found.
    pub fn seek(&mut self, pid: u32) {
        let is_python = *self.is_python.get_or_insert_with(|| {
            crate::runtime::of_exe(std::path::Path::new(&format!("/proc/{pid}/exe")))
                == Some(crate::runtime::Runtime::Python)
        });
        if !is_python
            || self.found.is_some()
            || self.unsupported.is_some()
            || self
                .sought
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1))
        {
            return;
        }
        self.sought = Some(std::time::Instant::now());
        match crate::python::find(pid) {
            Ok(Some(interp)) => {
                let Some(reader) = crate::python_code::CodeReader::new(pid, &interp) else {
                    return;
                };
                tracing::debug!(
                    "pid {pid}: Python {}, its frames read from the interpreter",
                    interp.version_text()
                );
                self.tell_kernel = Some(Some(interp.kernel));
                self.found = Some((interp, reader));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("pid {pid}: {e}");
                self.unsupported = Some(e);
            }
        }
    }

    /// The process exec'd: another program, perhaps another interpreter.
    pub fn reset(&mut self) {
        let had = self.found.is_some();
        *self = PythonProc::default();
        if had {
            self.tell_kernel = Some(None);
        }
    }

    pub fn on_frames(&mut self, tid: u32, sp: u64, frames: Vec<PyFrame>, truncated: bool) {
        self.pending.on_frames(tid, sp, frames, truncated);
    }

    /// Whether Python frames wait for a birth of `tid` (`splice_into` would take them).
    pub fn waits_on(&self, tid: u32) -> bool {
        self.pending.waits_on(tid)
    }

    /// The stack of `tid`'s birth at `sp` with its Python frames, and their names.
    pub fn splice_into(
        &mut self,
        tid: u32,
        sp: u64,
        mut native: Unwound,
    ) -> (Unwound, Vec<(u64, JitName)>) {
        let Some((frames, truncated)) = self.pending.take(tid, sp) else {
            return (native, Vec::new());
        };
        let Some((interp, reader)) = self.found.as_mut() else {
            return (native, Vec::new());
        };
        native.truncated |= truncated;
        splice(native, &frames, interp.eval, |c, i| reader.name(c, i))
    }
}

/// A Python frame as a frame of the stack, and its name.
fn frame_of(n: Named) -> (RawFrame, JitName) {
    let addr = crate::frame_tags::hashed(crate::frame_tags::PYTHON, &n);
    let program = is_program_file(&n.file);
    (
        RawFrame { addr, lookup: addr },
        JitName {
            function: n.function,
            file: Some(n.file),
            line: n.line,
            program,
            module: PY_MODULE,
            inlined: false,
        },
    )
}

/// Is a Python source file the program's own, not the standard library's, an installed
/// package's (`site-packages`, Debian's `dist-packages`) or frozen into the interpreter?
pub fn is_program_file(file: &str) -> bool {
    if file.starts_with('<') || file.contains("/site-packages/") || file.contains("/dist-packages/")
    {
        return false;
    }
    // `…/lib/python3.11/…`: the standard library.
    !file.split('/').collect::<Vec<_>>().windows(2).any(|w| {
        w[0] == "lib"
            && w[1]
                .strip_prefix("python")
                .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
    })
}

/// Put the Python `frames` (innermost first, `py::ENTRY_BIT` on the outermost frame of each
/// evaluation-loop call, or a shim with `py::SHIM_BIT` after it) into `native` in place of the frames of the loop (`eval`: where its
/// code is): the k-th loop frame from the top runs the k-th group. Groups left when the native
/// stack has no more loop frames (it was cut short) go at its end. Returns the stack and the
/// names of its Python frames; frames `name` cannot name (code objects that could not be read)
/// are left out.
pub fn splice(
    mut native: Unwound,
    frames: &[PyFrame],
    eval: Option<(u64, u64)>,
    mut name: impl FnMut(u64, u64) -> Option<Named>,
) -> (Unwound, Vec<(u64, JitName)>) {
    let mut groups: Vec<Vec<(RawFrame, JitName)>> = vec![Vec::new()];
    for f in frames {
        if f.code & py::SHIM_BIT != 0 {
            // 3.12+: the shim under a call's first frame.
            groups.push(Vec::new());
            continue;
        }
        let code = f.code & !py::ENTRY_BIT;
        if let Some(n) = name(code, f.instr)
            && let Some(g) = groups.last_mut()
        {
            g.push(frame_of(n));
        }
        if f.code & py::ENTRY_BIT != 0 {
            groups.push(Vec::new());
        }
    }
    groups.retain(|g| !g.is_empty());
    let mut names = Vec::new();
    let mut out = Vec::with_capacity(native.frames.len() + frames.len());
    let mut groups = groups.into_iter();
    let in_eval = |f: &RawFrame| eval.is_some_and(|(a, b)| f.lookup >= a && f.lookup < b);
    for f in native.frames.drain(..) {
        if in_eval(&f)
            && let Some(g) = groups.next()
        {
            for (raw, name) in g {
                out.push(raw);
                names.push((raw.addr, name));
            }
        } else {
            out.push(f);
        }
    }
    for g in groups {
        for (raw, name) in g {
            out.push(raw);
            names.push((raw.addr, name));
        }
    }
    native.frames = out;
    (native, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_files() {
        assert!(is_program_file("/srv/app/leak.py"));
        assert!(is_program_file("/home/u/lib/app.py"));
        assert!(!is_program_file("/usr/lib/python3.11/socket.py"));
        assert!(!is_program_file(
            "/root/.pyenv/versions/3.12.1/lib/python3.12/socket.py"
        ));
        assert!(!is_program_file(
            "/usr/lib/python3/dist-packages/requests/api.py"
        ));
        assert!(!is_program_file("/venv/lib/python3.11/site-packages/x.py"));
        assert!(!is_program_file("<frozen importlib._bootstrap>"));
        assert!(is_program_file("/srv/lib/pythonista/app.py"));
    }

    fn native(addrs: &[u64]) -> Unwound {
        Unwound {
            frames: addrs
                .iter()
                .map(|&a| RawFrame { addr: a, lookup: a })
                .collect(),
            truncated: false,
            method: crate::unwind::Method::Dwarf,
            ..Default::default()
        }
    }

    fn py(code: u64, entry: bool) -> PyFrame {
        PyFrame {
            code: code | if entry { py::ENTRY_BIT } else { 0 },
            instr: 0,
        }
    }

    /// Names code object N as function fN of /app/N.py.
    fn name(code: u64, _instr: u64) -> Option<Named> {
        (code != 0xbad0).then(|| Named {
            function: format!("f{code:x}"),
            file: format!("/app/{code:x}.py"),
            line: Some(1),
        })
    }

    fn functions(u: &Unwound, names: &[(u64, JitName)]) -> Vec<String> {
        u.frames
            .iter()
            .map(|f| {
                names
                    .iter()
                    .find(|(a, _)| *a == f.addr)
                    .map(|(_, n)| n.function.clone())
                    .unwrap_or_else(|| format!("{:x}", f.addr))
            })
            .collect()
    }

    #[test]
    fn groups_take_the_places_of_the_loop_frames() {
        // open64, io, eval (runs a0 a8 b0), call, eval (runs c0), main; the loop at 0x50..0x60.
        let eval = Some((0x50, 0x60));
        let frames = [
            py(0xa0, false),
            py(0xa8, false),
            py(0xb0, true),
            py(0xc0, true),
        ];
        let (u, names) = splice(
            native(&[0x10, 0x20, 0x55, 0x30, 0x56, 0x40]),
            &frames,
            eval,
            name,
        );
        assert_eq!(
            functions(&u, &names),
            ["10", "20", "fa0", "fa8", "fb0", "30", "fc0", "40"]
        );
        assert!(names.iter().all(|(_, n)| n.module == PY_MODULE));
        // A stack cut short before the second loop frame: the rest at its end; an unreadable
        // code object left out.
        let frames = [py(0xbad0, false), py(0xb0, true), py(0xc0, true)];
        let (u, names) = splice(native(&[0x10, 0x55, 0x30]), &frames, eval, name);
        assert_eq!(functions(&u, &names), ["10", "fb0", "30", "fc0"]);
        // 3.12+: shims end the groups.
        let shim = PyFrame {
            code: py::SHIM_BIT,
            instr: 0,
        };
        let frames = [py(0xa0, false), shim, py(0xc0, false), shim];
        let (u, names) = splice(native(&[0x10, 0x55, 0x56]), &frames, eval, name);
        assert_eq!(functions(&u, &names), ["10", "fa0", "fc0"]);
        // More loop frames than groups: the loop's frames stay.
        let (u, names) = splice(native(&[0x10, 0x55, 0x56]), &[py(0xb0, true)], eval, name);
        assert_eq!(functions(&u, &names), ["10", "fb0", "56"]);
    }

    #[test]
    fn pending_frames_join_by_stack_pointer() {
        let mut p = PendingFrames::default();
        p.on_frames(7, 0x1000, vec![PyFrame::default()], false);
        assert!(p.take(7, 0x2000).is_none(), "another birth's frames");
        assert!(p.take(7, 0x1000).is_none(), "taken once");
        p.on_frames(7, 0x1000, vec![PyFrame::default()], true);
        assert_eq!(
            p.take(7, 0x1000).map(|(f, t)| (f.len(), t)),
            Some((1, true))
        );
    }
}
