//! Interning of unwound stacks: each distinct stack gets one id and keeps the mappings its
//! addresses fell in, so it can be symbolized later, even after the process exited.
use crate::{
    link_markers,
    model::StackId,
    procinfo::Mapping,
    runtime::JitName,
    symbolize::{Frame, Symbols},
    unwind::{Method, RawFrame, Unwound},
};

/// The one frame of the stack of births sent without their stacks under load.
pub const STACK_DROPPED: &str = "[stack dropped under load]";

/// The frames as stacks are told apart: the same code, whichever goroutine asked for a
/// connection (`link_markers::grouping_key`). Changed in place (once per birth: no allocation for
/// stacks without markers), with the markers it replaced and where they were.
fn grouping_key(mut frames: Vec<RawFrame>) -> (Vec<RawFrame>, Vec<(usize, RawFrame)>) {
    let mut replaced = Vec::new();
    for (i, f) in frames.iter_mut().enumerate() {
        let key = link_markers::grouping_key(f);
        if key != *f {
            replaced.push((i, std::mem::replace(f, key)));
        }
    }
    (frames, replaced)
}

/// The key of a stack with frames named by the runtime (JIT frames from a perf map, Python
/// frames): its native frames up to the first named frame, less the runtime's own, then the
/// named frames alone, each by its name, up to the first of the program's own (the runtime's
/// library frames by function alone: a JDK method's line is known only while it is
/// interpreted, and which line of a library led to the syscall is not the program's call site):
/// one site per call in the program's source, whichever tier compiled it (other addresses, interpreter
/// trampolines between its frames or not), whichever tier its callers run in (an interpreted
/// caller's frame is the interpreter's, not its own), and whichever path through the runtime's
/// C code led from it to the syscall.
fn jit_key(frames: &[RawFrame], names: &[(u64, JitName)], all: &[Mapping]) -> Vec<RawFrame> {
    let name_of = |a: u64| names.iter().find(|(x, _)| *x == a).map(|(_, n)| n);
    let Some(first) = frames.iter().position(|f| name_of(f.addr).is_some()) else {
        return frames.to_vec();
    };
    let runtime = |f: &RawFrame| {
        all.iter()
            .find(|m| m.contains(f.lookup))
            .and_then(|m| m.path.to_str())
            .is_some_and(crate::runtime::is_runtime_module)
    };
    let mut key: Vec<RawFrame> = frames[..first]
        .iter()
        .filter(|f| !runtime(f))
        .copied()
        .collect();
    for f in &frames[first..] {
        if let Some(n) = name_of(f.addr) {
            // Not whether the JIT inlined it: one site whichever tier runs the code.
            let a = if n.program {
                let what = (&n.function, &n.file, n.line, n.module);
                crate::frame_tags::hashed(crate::frame_tags::JIT_KEY, &what)
            } else {
                crate::frame_tags::hashed(crate::frame_tags::JIT_KEY, &(&n.function, n.module))
            };
            key.push(RawFrame { addr: a, lookup: a });
            if n.program {
                break;
            }
        }
    }
    key
}

#[derive(Clone)]
pub struct StoredStack {
    pub raw: Unwound,
    /// The mappings holding the frames, captured when the stack was seen.
    pub mappings: Vec<Mapping>,
    /// JIT frames named from the runtime's perf map when the stack was seen, by address.
    pub jit: Vec<(u64, JitName)>,
    symbolized: Option<Vec<Frame>>,
}

#[derive(Clone, Default)]
pub struct StackStore {
    /// Looked up once per birth: foldhash, not the default SipHash (a stack of frames is hashed
    /// per event, and nothing here is keyed by untrusted input an attacker could aim at).
    ids: foldhash::HashMap<(Method, Vec<RawFrame>), StackId>,
    stacks: Vec<StoredStack>,
}

impl StackStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of this stack, interning it on first sight. The same addresses found by another
    /// unwinding method are another stack.
    pub fn intern(&mut self, unwound: Unwound, all: &[Mapping]) -> StackId {
        self.intern_named(unwound, all, Vec::new())
    }

    /// [`intern`](Self::intern) a stack whose JIT frames are named (`jit`, by address): the
    /// names, not the addresses, tell such stacks apart.
    pub fn intern_named(
        &mut self,
        unwound: Unwound,
        all: &[Mapping],
        jit: Vec<(u64, JitName)>,
    ) -> StackId {
        let Unwound {
            frames,
            truncated,
            method,
            jit_slots: _,
        } = unwound;
        let (frames, replaced) = grouping_key(frames);
        let (key, frames) = if jit.is_empty() {
            ((method, frames), None)
        } else {
            ((method, jit_key(&frames, &jit, all)), Some(frames))
        };
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let mut frames = frames.unwrap_or_else(|| key.1.clone());
        for (i, f) in replaced {
            frames[i] = f;
        }
        let id = self.stacks.len() as StackId;
        let mut mappings: Vec<Mapping> = Vec::new();
        for f in &frames {
            if let Some(m) = all.iter().find(|m| m.contains(f.lookup))
                && !mappings.contains(m)
            {
                mappings.push(m.clone());
            }
        }
        self.ids.insert(key, id);
        self.stacks.push(StoredStack {
            raw: Unwound {
                frames,
                truncated,
                method,
                jit_slots: Vec::new(),
            },
            mappings,
            jit,
            symbolized: None,
        });
        id
    }

    /// Append a stack without looking for an equal one (recordings number their stacks).
    pub fn push(&mut self, raw: Unwound, mappings: Vec<Mapping>) -> StackId {
        let id = self.stacks.len() as StackId;
        self.ids
            .entry((raw.method, grouping_key(raw.frames.clone()).0))
            .or_insert(id);
        self.stacks.push(StoredStack {
            raw,
            mappings,
            jit: Vec::new(),
            symbolized: None,
        });
        id
    }

    /// Name the JIT frames that had no name when their stack was seen (the runtime had not
    /// written its perf map yet): every frame outside the stack's mappings that `name` knows.
    pub fn name_jit(&mut self, mut name: impl FnMut(u64) -> Option<JitName>) {
        for s in &mut self.stacks {
            for f in &s.raw.frames {
                if s.mappings.iter().any(|m| m.contains(f.lookup))
                    || s.jit.iter().any(|(a, _)| *a == f.addr)
                {
                    continue;
                }
                if let Some(n) = name(f.lookup) {
                    s.jit.push((f.addr, n));
                    s.symbolized = None;
                }
            }
        }
    }

    /// Give a stack the symbols resolved elsewhere (when it was recorded).
    pub fn set_symbolized(&mut self, id: StackId, frames: Vec<Frame>) {
        if let Some(s) = self.stacks.get_mut(id as usize) {
            s.symbolized = Some(frames);
        }
    }

    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    pub fn get(&self, id: StackId) -> Option<&StoredStack> {
        self.stacks.get(id as usize)
    }

    /// Symbolized frames of a stack (computed once).
    pub fn frames(&mut self, id: StackId, symbols: &Symbols) -> Vec<Frame> {
        let Some(s) = self.stacks.get_mut(id as usize) else {
            return Vec::new();
        };
        if s.symbolized.is_none() {
            s.symbolized = Some(if s.raw.method == Method::Shed {
                vec![Frame::marker(STACK_DROPPED)]
            } else {
                let mut frames = symbols.frames(&s.raw.frames, &s.mappings);
                for f in frames
                    .iter_mut()
                    .filter(|f| f.function.is_none() && f.module.is_none())
                {
                    if let Some((_, n)) = s.jit.iter().find(|(a, _)| *a == f.addr) {
                        f.function = Some(n.function.clone());
                        f.file = n.file.clone();
                        f.line = n.line;
                        f.module = Some(n.module.to_string());
                        f.inlined = n.inlined;
                    }
                }
                frames
            });
        }
        s.symbolized.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unwound(addrs: &[u64]) -> Unwound {
        Unwound::of_return_addresses(addrs, Method::Dwarf)
    }

    #[test]
    fn same_stack_same_id() {
        let maps = vec![Mapping {
            start: 0x1000,
            end: 0x2000,
            offset: 0,
            path: "/bin/x".into(),
            source: Some("/bin/x".into()),
        }];
        let mut s = StackStore::new();
        let a = s.intern(unwound(&[0x1010, 0x1020]), &maps);
        let b = s.intern(unwound(&[0x1010, 0x1030]), &maps);
        let c = s.intern(unwound(&[0x1010, 0x1020]), &maps);
        let d = s.intern(
            Unwound {
                method: Method::Fp,
                ..unwound(&[0x1010, 0x1020])
            },
            &maps,
        );
        assert_eq!(a, c);
        assert_ne!(a, b);
        assert_ne!(
            a, d,
            "the same addresses found by another method are another stack"
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(d).unwrap().raw.method, Method::Fp);
        assert_eq!(s.get(a).unwrap().mappings.len(), 1);
    }

    #[test]
    fn joined_stacks_group_whichever_goroutine_asked() {
        let joined = |goid: u64| {
            let mut u = unwound(&[0x1010, 0x1020]);
            u.frames.insert(1, link_markers::requested_by(goid));
            u
        };
        let mut s = StackStore::new();
        let a = s.intern(joined(7), &[]);
        let b = s.intern(joined(9), &[]);
        assert_eq!(a, b);
        // The stack keeps the first request's goroutine.
        assert_eq!(
            s.get(a).unwrap().raw.frames[1],
            link_markers::requested_by(7)
        );
        assert_ne!(s.intern(unwound(&[0x1010, 0x1020]), &[]), a);
    }
}
