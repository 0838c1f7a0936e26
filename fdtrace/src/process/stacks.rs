//! A traced process's stacks: its mappings, the unwinding of a birth's stack (frame pointers,
//! DWARF over the copy, the deeper copy of language runtimes), interning, and the names of
//! JIT code.
use super::*;

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
        self.stacks
            .intern_named(unwound, self.unwinder.mappings(), names)
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
