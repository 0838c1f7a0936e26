//! A traced process's stacks: its mappings, the unwinding of a birth's stack (frame pointers,
//! DWARF over the copy, the deeper copy of language runtimes), interning, and the names of
//! JIT code.
use super::*;

/// At most this many kept walks' stack ids per process (all are dropped when it is full):
/// the unwinder keeps at most `unwind_memo::WALKS_KEPT` walks, each dropped walk's number is
/// never seen again.
const WALK_STACKS_KEPT: usize = 1024;

impl State {
    /// Re-read the mappings when an address is not covered. Rate-limited only while re-reading
    /// finds nothing new (an address in anonymous code, say), so a process that is still loading
    /// its libraries is followed closely.
    pub(super) fn refresh_maps(&mut self, force: bool) {
        if !force
            && !self.last_refresh_changed
            && self
                .last_refresh
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last_refresh = Some(Instant::now());
        let (maps, jit) = procinfo::exec_maps(self.pid);
        self.unwinder.set_jit(jit);
        self.last_refresh_changed = !maps.is_empty() && maps != self.unwinder.mappings();
        if self.last_refresh_changed {
            self.unwinder.set_mappings(maps);
        }
    }

    /// Unwind and intern the creating stack of a birth.
    pub(super) fn stack_of(&mut self, o: &Open) -> StackId {
        if self.unwinder.mapping_for(o.ip).is_none() {
            self.refresh_maps(false);
        }
        let plain = self.plain_copy(o);
        if let Some(copy) = plain
            && let Some(walk) = self.unwinder.kept_walk(o.ip, o.sp, o.bp, copy)
            && let Some(&id) = self.walk_stacks.get(&walk)
        {
            return id;
        }
        let (id, mapped) = self.unwind_and_intern(o);
        // What the kept walk became, when nothing but the walk made it (`plain_copy`) and
        // every frame is in a mapping (a frame outside them has the mappings read again).
        if let Some(copy) = plain
            && mapped
            && let Some(walk) = self.unwinder.kept_walk(o.ip, o.sp, o.bp, copy)
        {
            if self.walk_stacks.len() >= WALK_STACKS_KEPT {
                self.walk_stacks.clear();
            }
            self.walk_stacks.insert(walk, id);
        }
        id
    }

    /// A birth's stack copy when its stack is the walk of that copy alone: no pieces of a
    /// deeper stack, Python frames or Node.js connect wait for it (each is taken by the birth
    /// it waits for) and no goroutine is joined to it. Then its stack id is a function of the
    /// walk (the walk kept no JIT frames, and the mappings it used are the interned stack's).
    fn plain_copy<'o>(&self, o: &'o Open) -> Option<&'o [u8]> {
        let UserStack::Copy(copy) = &o.stack else {
            return None;
        };
        let tid = o.hdr.tid;
        let plain = o.goid == 0
            && !self.deep.waits_on(tid)
            && !self.uv_links.waits_on(tid)
            && !self.runtime.python.waits_on(tid);
        plain.then_some(*copy)
    }

    /// The stack id of a birth, and whether each of its frames is in a mapping.
    fn unwind_and_intern(&mut self, o: &Open) -> (StackId, bool) {
        let unwound = self.unwind(o);
        let unwound = self.go_links.join(unwound, o.goid, o.parent_goid, o.gopc);
        let unwound = match &o.stack {
            UserStack::Copy(copy) => self.uv_links.join(unwound, o.hdr.tid, o.sp, copy),
            _ => unwound,
        };
        let unwinder = &self.unwinder;
        let (unwound, names) = self
            .runtime
            .name(o.hdr.tid, o.sp, unwound, |a| unwinder.is_jit(a));
        let mapped = unwound
            .frames
            .iter()
            .all(|f| self.unwinder.mapping_for(f.lookup).is_some());
        let id = self
            .stacks
            .intern_named(unwound, self.unwinder.mappings(), names);
        (id, mapped)
    }

    /// Before a report: name the JIT frames of stacks seen before the runtime's perf map
    /// named their code.
    pub fn name_jit_frames(&mut self) {
        self.runtime.name_late(&mut self.stacks);
    }

    /// Unwind the stack of a birth with the method its capture calls for.
    pub(super) fn unwind(&mut self, o: &Open) -> Unwound {
        if !matches!(o.stack, UserStack::Copy(_)) {
            self.deep.forget(o.hdr.tid);
        }
        match &o.stack {
            UserStack::FramePointers(ips) => {
                if ips.iter().any(|&a| self.unwinder.mapping_for(a).is_none()) {
                    self.refresh_maps(false);
                }
                self.unwinder.unwind_fp(ips)
            }
            UserStack::Copy(bytes) => self.unwind_deep(o.hdr.tid, o.ip, o.sp, o.bp, bytes),
            UserStack::Shed => {
                self.table.stats.stacks_dropped += 1;
                Unwound {
                    frames: Vec::new(),
                    truncated: false,
                    method: unwind::Method::Shed,
                    ..Default::default()
                }
            }
            UserStack::None => {
                // Nothing captured: the instruction pointer alone, cut short.
                let mut u = self.unwind_copy(o.ip, o.sp, o.bp, &[]);
                u.truncated = true;
                if self.capture == capture::FRAME_POINTERS {
                    u.method = unwind::Method::Fp;
                }
                u
            }
        }
    }

    /// Unwind a copied stack, with the pieces beyond its first `STACK_BYTES` sent before it.
    pub(super) fn unwind_deep(
        &mut self,
        tid: u32,
        ip: u64,
        sp: u64,
        bp: u64,
        copy: &[u8],
    ) -> Unwound {
        match self.deep.join(tid, sp, copy) {
            Some(all) => self.unwind_copy(ip, sp, bp, &all),
            None => self.unwind_copy(ip, sp, bp, copy),
        }
    }

    pub(super) fn unwind_copy(&mut self, ip: u64, sp: u64, bp: u64, stack: &[u8]) -> Unwound {
        let runtime = &mut self.runtime;
        let mut unwound = self
            .unwinder
            .unwind(ip, sp, bp, stack, &mut |pc| runtime.jit_frame(pc));
        let uncovered = |u: &Unwound, w: &StackUnwinder| {
            // JIT code is in no file: known as such, it needs no re-read.
            u.frames
                .iter()
                .any(|f| w.mapping_for(f.lookup).is_none() && !w.is_jit(f.lookup))
        };
        if uncovered(&unwound, &self.unwinder) {
            self.refresh_maps(false);
            let runtime = &mut self.runtime;
            unwound = self
                .unwinder
                .unwind(ip, sp, bp, stack, &mut |pc| runtime.jit_frame(pc));
        }
        unwound
    }

    /// Node.js: a TCP handle made (its stack unwound as a birth's) or connected (`uv_links`).
    pub(super) fn on_uv_handle(&mut self, h: crate::events::UvHandle) {
        if h.role == fdtrace_common::uv::CONNECT {
            self.uv_links.on_connect(h.hdr.tid, h.handle, h.sp, h.ret);
            return;
        }
        if self.unwinder.mapping_for(h.ip).is_none() {
            self.refresh_maps(false);
        }
        let made = self.unwind_deep(h.hdr.tid, h.ip, h.sp, h.bp, h.stack);
        self.uv_links.on_init(h.handle, made);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdtrace_common::{Header, STACK_BYTES, syscall};

    fn birth(ip: u64, sp: u64, bp: u64, stack: &[u8], goid: u64) -> Open<'_> {
        let pid = std::process::id();
        Open {
            hdr: Header {
                kind: fdtrace_common::kind::OPEN,
                tgid: pid,
                tid: pid,
                ..Header::default()
            },
            fd: 3,
            fd2: -1,
            arg: -1,
            flags: 0,
            syscall: syscall::OPENAT,
            path: "/dev/null".into(),
            ip,
            sp,
            bp,
            goid,
            parent_goid: 0,
            gopc: 0,
            sock: Default::default(),
            control: Vec::new(),
            stack: UserStack::Copy(stack),
        }
    }

    /// The frames of a birth's stack as a new state (nothing kept) interns them.
    fn fresh(o: &Open) -> Unwound {
        let mut s = State::new(std::process::id(), UnwindMode::Dwarf, capture::STACK_COPY);
        let id = s.stack_of(o);
        s.stacks.get(id).expect("interned").raw.clone()
    }

    fn frames_of(s: &State, id: StackId) -> Unwound {
        s.stacks.get(id).expect("interned").raw.clone()
    }

    #[test]
    fn a_kept_walks_stack_is_the_one_a_fresh_unwind_interns() {
        let (ip, sp, bp, mut stack) = crate::own_stack::capture_here();
        let tid = std::process::id();
        let mut s = State::new(tid, UnwindMode::Dwarf, capture::STACK_COPY);
        let first = s.stack_of(&birth(ip, sp, bp, &stack, 0));
        assert!(!frames_of(&s, first).frames.is_empty());
        assert_eq!(frames_of(&s, first), fresh(&birth(ip, sp, bp, &stack, 0)));
        assert_eq!(s.walk_stacks.len(), 1, "the walk's stack id is kept");
        // Again: the kept id, the same stack.
        assert_eq!(s.stack_of(&birth(ip, sp, bp, &stack, 0)), first);

        // The return address the walk read changed: walked and interned again, as a fresh
        // state does.
        let ret = frames_of(&s, first).frames[1].addr;
        let walk = s.unwinder.walks.of(ip, sp).reads.clone();
        let read = walk
            .iter()
            .find(|r| r.word == Some(ret))
            .expect("the return address was read")
            .addr;
        let off = (read - sp) as usize;
        stack[off..off + 8].copy_from_slice(&0u64.to_le_bytes());
        let changed = s.stack_of(&birth(ip, sp, bp, &stack, 0));
        assert_eq!(frames_of(&s, changed), fresh(&birth(ip, sp, bp, &stack, 0)));
        assert_ne!(frames_of(&s, changed), frames_of(&s, first));
    }

    #[test]
    fn what_waits_for_a_birth_is_taken_not_answered_from_the_kept_walks() {
        let (ip, sp, bp, stack) = crate::own_stack::capture_here();
        let tid = std::process::id();
        let mut s = State::new(tid, UnwindMode::Dwarf, capture::STACK_COPY);
        let first = s.stack_of(&birth(ip, sp, bp, &stack, 0));
        assert_eq!(s.stack_of(&birth(ip, sp, bp, &stack, 0)), first);
        // Pieces of a deeper stack for this thread: the birth takes them (its copy is whole
        // only when it holds STACK_BYTES; either way nothing is left waiting).
        s.deep.on_chunk(tid, sp, STACK_BYTES as u32, &[0u8; 64]);
        assert!(s.deep.waits_on(tid));
        assert!(s.plain_copy(&birth(ip, sp, bp, &stack, 0)).is_none());
        s.stack_of(&birth(ip, sp, bp, &stack, 0));
        assert!(!s.deep.waits_on(tid), "the pieces were not taken");
        // A goroutine's birth is joined to what started it: not a plain walk.
        assert!(s.plain_copy(&birth(ip, sp, bp, &stack, 7)).is_none());
        assert!(s.plain_copy(&birth(ip, sp, bp, &stack, 0)).is_some());
        // New mappings: the kept walks and their ids are of no use any more.
        s.unwinder.set_mappings(Vec::new());
        assert!(s.unwinder.kept_walk(ip, sp, bp, &stack).is_none());
    }
}
