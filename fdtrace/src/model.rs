//! The descriptor table of one traced process: which descriptors are open and where each came
//! from. Pure logic: the eBPF side only observes, this decides.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::fd_slots::FdSlots;
use crate::sockets::SocketInfo;
use compact_str::CompactString;

/// Identifies an interned creating stack (see `stacks::StackStore`).
pub type StackId = u32;

/// `O_CLOEXEC` on x86_64 Linux.
pub const O_CLOEXEC: u32 = 0o2_000_000;

/// What kind of object a descriptor refers to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FdKind {
    File,
    Socket,
    Pipe,
    Eventfd,
    Epoll,
    Timerfd,
    Signalfd,
    Inotify,
    Memfd,
    Pidfd,
    IoUring,
    Bpf,
    Other,
}

impl FdKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FdKind::File => "file",
            FdKind::Socket => "socket",
            FdKind::Pipe => "pipe",
            FdKind::Eventfd => "eventfd",
            FdKind::Epoll => "epoll",
            FdKind::Timerfd => "timerfd",
            FdKind::Signalfd => "signalfd",
            FdKind::Inotify => "inotify",
            FdKind::Memfd => "memfd",
            FdKind::Pidfd => "pidfd",
            FdKind::IoUring => "io_uring",
            FdKind::Bpf => "bpf",
            FdKind::Other => "other",
        }
    }

    /// Every kind, in the order of their codes in recordings.
    pub const ALL: [FdKind; 13] = [
        FdKind::File,
        FdKind::Socket,
        FdKind::Pipe,
        FdKind::Eventfd,
        FdKind::Epoll,
        FdKind::Timerfd,
        FdKind::Signalfd,
        FdKind::Inotify,
        FdKind::Memfd,
        FdKind::Pidfd,
        FdKind::IoUring,
        FdKind::Bpf,
        FdKind::Other,
    ];

    /// The kind's code in recordings.
    pub fn code(self) -> u8 {
        FdKind::ALL.iter().position(|k| *k == self).unwrap_or(12) as u8
    }

    pub fn from_code(code: u8) -> FdKind {
        FdKind::ALL
            .get(code as usize)
            .copied()
            .unwrap_or(FdKind::Other)
    }

    /// Classify a `/proc/PID/fd/N` link target (`socket:[123]`, `anon_inode:[eventfd]`, …).
    pub fn from_link(target: &str) -> FdKind {
        if target.starts_with("socket:") {
            FdKind::Socket
        } else if target.starts_with("pipe:") {
            FdKind::Pipe
        } else if target.starts_with("/memfd:") {
            FdKind::Memfd
        } else if let Some(anon) = target.strip_prefix("anon_inode:") {
            let anon = anon.trim_start_matches('[').trim_end_matches(']');
            match anon {
                "eventfd" => FdKind::Eventfd,
                "eventpoll" => FdKind::Epoll,
                "timerfd" => FdKind::Timerfd,
                "signalfd" => FdKind::Signalfd,
                "inotify" => FdKind::Inotify,
                "pidfd" => FdKind::Pidfd,
                "io_uring" => FdKind::IoUring,
                a if a.starts_with("bpf") => FdKind::Bpf,
                _ => FdKind::Other,
            }
        } else if target.starts_with('/') {
            FdKind::File
        } else {
            FdKind::Other
        }
    }
}

/// Where a descriptor came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Open before tracing began (read from /proc at attach): no known call site.
    Preexisting,
    /// Created while traced, by the stack with this id.
    Stack(StackId),
    /// Found in /proc without a traced birth (drift, corrected by reconciliation).
    Untraced,
}

/// One open descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenFd {
    pub kind: FdKind,
    /// Path or object description (inline up to 24 bytes: a birth allocates nothing for it).
    pub target: CompactString,
    /// Monotonic time of the birth (ns), unknown for pre-existing descriptors.
    pub opened_ns: Option<u64>,
    pub origin: Origin,
    pub cloexec: bool,
    /// Family, addresses and TCP state of a socket descriptor (boxed: the table moves its
    /// entries on every birth and close, and most descriptors are not sockets).
    pub sock: Option<Box<SocketInfo>>,
}

/// Counters that tell how well the model tracked the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableStats {
    pub opens: u64,
    pub closes: u64,
    /// A birth reported a number the model still held open: a close was missed.
    pub replaced: u64,
    /// A close named a number the model did not hold (EBADF, or a missed birth).
    pub unknown_closes: u64,
    /// Reconciliation with /proc found a descriptor the model missed (and added it).
    pub drift_opens: u64,
    /// Reconciliation with /proc found a descriptor the model held but the kernel had closed.
    pub drift_closes: u64,
    /// Births that came without their stack because fdtrace's ring buffer was half full: their
    /// descriptors are counted under the site "[stack dropped under load]".
    pub stacks_dropped: u64,
}

/// Births that failed with "too many open files" at one call site.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failures {
    pub count: u64,
    /// EMFILE (the process's limit) or ENFILE (the system's).
    pub errno: i32,
    pub first_ns: u64,
    pub last_ns: u64,
    /// What was being opened (a path, or the syscall).
    pub example: String,
}

/// A short name for a birth syscall id.
pub fn syscall_name(sc: u32) -> &'static str {
    fdtrace_common::syscall::name(sc).unwrap_or("a descriptor syscall")
}

/// The failures of a birth that fdtrace counts ("too many open files"), by errno and name:
/// EMFILE is the process's limit, ENFILE the system's.
pub const COUNTED_FAILURES: [(i32, &str); 2] = [(libc::EMFILE, "EMFILE"), (libc::ENFILE, "ENFILE")];

/// The name of a counted failure's errno.
pub fn failure_name(errno: i32) -> &'static str {
    if errno == libc::ENFILE {
        "ENFILE"
    } else {
        "EMFILE"
    }
}

/// The descriptor table of one process (shared by its threads).
#[derive(Clone, Debug, Default)]
pub struct FdTable {
    fds: FdSlots<OpenFd>,
    pub stats: TableStats,
    /// Failed births ("too many open files") by call site: those the kernel sent with a stack.
    pub failures: BTreeMap<StackId, Failures>,
    /// Every failed birth, by syscall and errno, as the kernel counted them (a storm of
    /// failures is counted there, and only a bounded rate of them is sent with stacks).
    pub failure_totals: BTreeMap<(u32, i32), u64>,
}

impl FdTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Record a descriptor present before tracing began.
    /// `born_ns`: when the descriptor was created, where the kernel keeps it (pipes).
    pub fn preexisting(
        &mut self,
        fd: i32,
        kind: FdKind,
        target: String,
        cloexec: bool,
        born_ns: Option<u64>,
    ) {
        self.fds.insert(
            fd,
            OpenFd {
                kind,
                target: target.into(),
                opened_ns: born_ns,
                origin: Origin::Preexisting,
                cloexec,
                sock: None,
            },
        );
    }

    /// A birth at `stack` failed with `errno` (EMFILE or ENFILE).
    pub fn failed(&mut self, stack: StackId, errno: i32, ts_ns: u64, example: String) {
        let f = self.failures.entry(stack).or_insert_with(|| Failures {
            errno,
            first_ns: ts_ns,
            example,
            ..Failures::default()
        });
        f.count += 1;
        f.last_ns = ts_ns;
        f.errno = errno;
    }

    /// The kernel's count of failed births of `syscall` with `errno` so far. Returns whether it
    /// changed.
    pub fn set_failure_total(&mut self, syscall: u32, errno: i32, count: u64) -> bool {
        self.failure_totals.insert((syscall, errno), count) != Some(count)
    }

    /// The last count [`FdTable::set_failure_total`] was given.
    pub fn failure_total(&self, syscall: u32, errno: i32) -> Option<u64> {
        self.failure_totals.get(&(syscall, errno)).copied()
    }

    /// Failed births with `errno`: the kernel's count where known, never fewer than those seen
    /// with a stack. Returns (all, with a stack).
    pub fn failure_count(&self, errno: i32) -> (u64, u64) {
        let with_stack: u64 = self
            .failures
            .values()
            .filter(|f| f.errno == errno)
            .map(|f| f.count)
            .sum();
        let counted: u64 = self
            .failure_totals
            .iter()
            .filter(|((_, e), _)| *e == errno)
            .map(|(_, n)| n)
            .sum();
        (counted.max(with_stack), with_stack)
    }

    /// Reconciliation: `fd` is open in the kernel but was never seen born.
    pub fn untraced(&mut self, fd: i32, kind: FdKind, target: String, cloexec: bool) {
        self.stats.drift_opens += 1;
        self.fds.insert(
            fd,
            OpenFd {
                kind,
                target: target.into(),
                opened_ns: None,
                origin: Origin::Untraced,
                cloexec,
                sock: None,
            },
        );
    }

    /// Reconciliation: the kernel closed `fd` without the model seeing it.
    pub fn drift_close(&mut self, fd: i32) {
        if self.fds.remove(fd).is_some() {
            self.stats.drift_closes += 1;
        }
    }

    /// A syscall returned the new descriptor `fd`. Returns the entry it replaced, if the model
    /// still held that number (a missed close).
    pub fn open(&mut self, fd: i32, entry: OpenFd) -> Option<OpenFd> {
        self.stats.opens += 1;
        let old = self.fds.insert(fd, entry);
        // A pre-existing entry may be a birth that raced with the /proc baseline (the event
        // arrives after the baseline listed it): the event is the better record, not a miss.
        if matches!(
            old,
            Some(OpenFd {
                origin: Origin::Stack(_),
                ..
            })
        ) {
            self.stats.replaced += 1;
        }
        old
    }

    /// `close(fd)`: ends exactly the latest birth of that number.
    pub fn close(&mut self, fd: i32) -> Option<OpenFd> {
        let old = self.fds.remove(fd);
        if old.is_some() {
            self.stats.closes += 1;
        } else {
            self.stats.unknown_closes += 1;
        }
        old
    }

    /// An implicit close (dup2/dup3 onto an open number); nothing happens if it was not open.
    pub fn close_if_open(&mut self, fd: i32) -> Option<OpenFd> {
        let old = self.fds.remove(fd);
        if old.is_some() {
            self.stats.closes += 1;
        }
        old
    }

    /// `close_range(first, last, flags)`: closes every descriptor in the range, or only marks
    /// them close-on-exec with `CLOSE_RANGE_CLOEXEC`. Returns how many were affected.
    pub fn close_range(&mut self, first: u32, last: u32, cloexec_only: bool) -> usize {
        let lo = first.min(i32::MAX as u32) as i32;
        let hi = last.min(i32::MAX as u32) as i32;
        if lo > hi {
            return 0;
        }
        if cloexec_only {
            let mut marked = 0;
            self.fds.for_each_in(lo..=hi, |e| {
                e.cloexec = true;
                marked += 1;
            });
            return marked;
        }
        let doomed: Vec<i32> = self.fds.range(lo..=hi).map(|(fd, _)| fd).collect();
        for &fd in &doomed {
            self.fds.remove(fd);
        }
        self.stats.closes += doomed.len() as u64;
        doomed.len()
    }

    /// A successful exec closes every close-on-exec descriptor.
    pub fn exec(&mut self) -> usize {
        let before = self.fds.len();
        self.fds.retain(|_, e| !e.cloexec);
        before - self.fds.len()
    }

    /// fcntl(F_SETFD) / ioctl(FIOCLEX, FIONCLEX); nothing happens if `fd` is not open.
    pub fn set_cloexec(&mut self, fd: i32, on: bool) {
        if let Some(e) = self.fds.get_mut(fd) {
            e.cloexec = on;
        }
    }

    /// Keep only descriptors opened at least `min_s` seconds before `now_ns` (and those of
    /// unknown age).
    pub fn retain_older(&mut self, now_ns: u64, min_s: f64) {
        let min_ns = (min_s * 1e9) as u64;
        self.fds.retain(|_, e| {
            e.opened_ns
                .is_none_or(|t| now_ns.saturating_sub(t) >= min_ns)
        });
    }

    /// The table a forked child starts with: the same descriptors and origins, fresh counters.
    pub fn inherited(&self) -> FdTable {
        FdTable {
            fds: self.fds.clone(),
            stats: TableStats::default(),
            failures: BTreeMap::new(),
            failure_totals: BTreeMap::new(),
        }
    }

    pub fn get(&self, fd: i32) -> Option<&OpenFd> {
        self.fds.get(fd)
    }

    pub fn get_mut(&mut self, fd: i32) -> Option<&mut OpenFd> {
        self.fds.get_mut(fd)
    }

    pub fn len(&self) -> usize {
        self.fds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (i32, &OpenFd)> {
        self.fds.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn a_table_entry_stays_small() {
        // The table's map moves entries on every birth and close: a socket's details are
        // boxed, not inline (they made an entry 144 bytes; 64 now).
        assert!(
            std::mem::size_of::<OpenFd>() <= 64,
            "{}",
            std::mem::size_of::<OpenFd>()
        );
    }

    fn born(stack: StackId, t: u64, cloexec: bool) -> OpenFd {
        OpenFd {
            kind: FdKind::File,
            target: format!("/f{stack}").into(),
            opened_ns: Some(t),
            origin: Origin::Stack(stack),
            cloexec,
            sock: None,
        }
    }

    #[test]
    fn close_ends_the_latest_birth_of_a_reused_number() {
        let mut t = FdTable::new();
        t.open(3, born(1, 10, false));
        assert_eq!(t.close(3).unwrap().origin, Origin::Stack(1));
        t.open(3, born(2, 20, false));
        assert_eq!(t.get(3).unwrap().origin, Origin::Stack(2));
        assert_eq!(t.close(3).unwrap().origin, Origin::Stack(2));
        assert!(t.is_empty());
        assert_eq!(t.stats.closes, 2);
    }

    #[test]
    fn close_of_unknown_number_changes_nothing() {
        let mut t = FdTable::new();
        t.open(4, born(1, 1, false));
        assert!(t.close(5).is_none());
        assert_eq!(t.len(), 1);
        assert_eq!(t.stats.unknown_closes, 1);
    }

    #[test]
    fn open_over_held_number_counts_a_missed_close() {
        let mut t = FdTable::new();
        t.open(4, born(1, 1, false));
        let old = t.open(4, born(2, 2, false)).unwrap();
        assert_eq!(old.origin, Origin::Stack(1));
        assert_eq!(t.stats.replaced, 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn exec_drops_only_cloexec() {
        let mut t = FdTable::new();
        t.preexisting(0, FdKind::Other, "/dev/pts/0".into(), false, None);
        t.preexisting(5, FdKind::Pipe, "pipe:[1]".into(), true, Some(7));
        t.open(6, born(1, 1, true));
        t.open(7, born(2, 1, false));
        assert_eq!(t.exec(), 2);
        let left: Vec<i32> = t.iter().map(|(fd, _)| fd).collect();
        assert_eq!(left, vec![0, 7]);
    }

    #[test]
    fn close_range_closes_or_marks() {
        let mut t = FdTable::new();
        for fd in [1, 3, 4, 5, 9] {
            t.open(fd, born(fd as u32, 0, false));
        }
        assert_eq!(t.close_range(4, u32::MAX, true), 3);
        assert!(t.get(5).unwrap().cloexec && !t.get(3).unwrap().cloexec);
        assert_eq!(t.close_range(3, 5, false), 3);
        let left: Vec<i32> = t.iter().map(|(fd, _)| fd).collect();
        assert_eq!(left, vec![1, 9]);
        assert_eq!(t.close_range(7, 2, false), 0);
        assert_eq!(t.exec(), 1);
    }

    #[test]
    fn failure_totals_from_the_kernel_count_more_than_the_sampled_sites() {
        let mut t = FdTable::new();
        t.failed(7, libc::EMFILE, 10, "/tmp/a".into());
        t.failed(8, libc::EMFILE, 11, "/tmp/b".into());
        // Without the kernel's count: what was seen.
        assert_eq!(t.failure_count(libc::EMFILE), (2, 2));
        assert!(t.set_failure_total(1, libc::EMFILE, 900));
        assert!(!t.set_failure_total(1, libc::EMFILE, 900));
        assert!(t.set_failure_total(11, libc::EMFILE, 100));
        assert_eq!(t.failure_count(libc::EMFILE), (1000, 2));
        assert_eq!(t.failure_count(libc::ENFILE), (0, 0));
        assert!(t.inherited().failure_totals.is_empty());
    }

    #[test]
    fn failures_are_counted_per_call_site() {
        let mut t = FdTable::new();
        t.failed(7, 24, 100, "/tmp/a".into());
        t.failed(7, 24, 200, "/tmp/b".into());
        t.failed(9, 23, 300, "socket".into());
        assert_eq!(t.failures[&7].count, 2);
        assert_eq!(
            (t.failures[&7].first_ns, t.failures[&7].last_ns),
            (100, 200)
        );
        assert_eq!(t.failures[&7].example, "/tmp/a");
        assert_eq!(t.failures[&9].errno, 23);
        assert!(t.is_empty());
        assert!(t.inherited().failures.is_empty());
    }

    #[test]
    fn kind_codes_round_trip() {
        for k in FdKind::ALL {
            assert_eq!(FdKind::from_code(k.code()), k);
        }
        assert_eq!(FdKind::from_code(200), FdKind::Other);
    }

    #[test]
    fn classify_links() {
        assert_eq!(FdKind::from_link("socket:[12]"), FdKind::Socket);
        assert_eq!(FdKind::from_link("pipe:[3]"), FdKind::Pipe);
        assert_eq!(FdKind::from_link("anon_inode:[eventfd]"), FdKind::Eventfd);
        assert_eq!(FdKind::from_link("anon_inode:[eventpoll]"), FdKind::Epoll);
        assert_eq!(FdKind::from_link("anon_inode:bpf-map"), FdKind::Bpf);
        assert_eq!(FdKind::from_link("/memfd:x (deleted)"), FdKind::Memfd);
        assert_eq!(FdKind::from_link("/etc/passwd"), FdKind::File);
        assert_eq!(FdKind::from_link("anon_inode:[io_uring]"), FdKind::IoUring);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Open(i32, StackId, bool),
        Close(i32),
        CloseRange(u32, u32, bool),
        Exec,
        SetCloexec(i32, bool),
        Fork,
        DriftClose(i32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..8i32, 0..4u32, any::<bool>()).prop_map(|(fd, s, c)| Op::Open(fd, s, c)),
            (0..8i32).prop_map(Op::Close),
            (0..9u32, 0..9u32, any::<bool>()).prop_map(|(a, b, c)| Op::CloseRange(a, b, c)),
            Just(Op::Exec),
            (0..8i32, any::<bool>()).prop_map(|(fd, on)| Op::SetCloexec(fd, on)),
            Just(Op::Fork),
            (0..8i32).prop_map(Op::DriftClose),
        ]
    }

    proptest! {
        /// The table agrees with a plain map used as the reference model, and its counters add up.
        #[test]
        fn agrees_with_reference(ops in proptest::collection::vec(op(), 0..200)) {
            let mut t = FdTable::new();
            let mut reference: HashMap<i32, (StackId, bool)> = HashMap::new();
            let (mut opens, mut closes, mut replaced, mut unknown) = (0u64, 0u64, 0u64, 0u64);
            let mut drift_closes = 0u64;
            for (i, op) in ops.iter().enumerate() {
                match *op {
                    Op::Open(fd, s, c) => {
                        opens += 1;
                        if reference.insert(fd, (s, c)).is_some() { replaced += 1; }
                        t.open(fd, born(s, i as u64, c));
                    }
                    Op::Close(fd) => {
                        if reference.remove(&fd).is_some() { closes += 1 } else { unknown += 1 }
                        t.close(fd);
                    }
                    Op::CloseRange(a, b, cloexec) => {
                        let inr = |fd: &i32| (a as i64..=b as i64).contains(&(*fd as i64));
                        if cloexec {
                            for (fd, v) in reference.iter_mut() { if inr(fd) { v.1 = true } }
                        } else {
                            let before = reference.len();
                            reference.retain(|fd, _| !inr(fd));
                            closes += (before - reference.len()) as u64;
                        }
                        t.close_range(a, b, cloexec);
                    }
                    Op::Exec => {
                        reference.retain(|_, (_, c)| !*c);
                        t.exec();
                    }
                    Op::SetCloexec(fd, on) => {
                        if let Some(v) = reference.get_mut(&fd) { v.1 = on }
                        t.set_cloexec(fd, on);
                    }
                    Op::Fork => {
                        // The child's table: same descriptors, fresh counters.
                        t = t.inherited();
                        (opens, closes, replaced, unknown, drift_closes) = (0, 0, 0, 0, 0);
                    }
                    Op::DriftClose(fd) => {
                        if reference.remove(&fd).is_some() { drift_closes += 1 }
                        t.drift_close(fd);
                    }
                }
                prop_assert_eq!(t.len(), reference.len());
            }
            for (fd, e) in t.iter() {
                let (s, c) = reference[&fd];
                prop_assert_eq!(e.origin, Origin::Stack(s));
                prop_assert_eq!(e.cloexec, c);
            }
            prop_assert_eq!(t.stats, TableStats {
                opens, closes, replaced, unknown_closes: unknown, drift_opens: 0, drift_closes,
                stacks_dropped: 0,
            });
        }
    }
}
