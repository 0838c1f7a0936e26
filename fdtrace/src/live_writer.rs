//! Where the live view goes: stderr, written by a thread of its own through a short queue, so
//! that a terminal or pipe that nobody reads (a paused pager, a full pipe) never stalls the
//! tracing loop. When the queue is full an update is dropped, and counted; the report says how
//! many. On a terminal the view is drawn on the alternate screen, which is left at the end, so
//! the scrollback keeps only the report.
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

/// Updates waiting to be written; beyond them updates are dropped.
const QUEUE: usize = 4;

use crate::terminal::{ENTER_ALT_SCREEN, LEAVE_ALT_SCREEN};
/// Home, then clear: each screen is drawn from the top.
pub const CLEAR: &str = "\x1b[H\x1b[2J";

pub struct LiveWriter {
    tx: Option<mpsc::SyncSender<String>>,
    screen: bool,
    offered: u64,
    written: Arc<AtomicU64>,
    done: mpsc::Receiver<()>,
}

impl LiveWriter {
    /// Start writing to `out` (stderr in fdtrace); `screen`: `out` is a terminal.
    pub fn start(out: impl std::io::Write + Send + 'static, screen: bool) -> Self {
        let (tx, rx) = mpsc::sync_channel::<String>(QUEUE);
        let (done_tx, done) = mpsc::sync_channel(1);
        let written = Arc::new(AtomicU64::new(0));
        let w = written.clone();
        let spawned = std::thread::Builder::new()
            .name("fdtrace-live".into())
            .spawn(move || {
                let mut out = out;
                if screen {
                    let _ = out.write_all(ENTER_ALT_SCREEN.as_bytes());
                }
                for frame in rx {
                    if out
                        .write_all(frame.as_bytes())
                        .and_then(|_| out.flush())
                        .is_err()
                    {
                        break;
                    }
                    w.fetch_add(1, Ordering::Relaxed);
                }
                if screen {
                    let _ = out.write_all(LEAVE_ALT_SCREEN.as_bytes());
                    let _ = out.flush();
                }
                let _ = done_tx.send(());
            });
        LiveWriter {
            tx: spawned.is_ok().then_some(tx),
            screen,
            offered: 0,
            written,
            done,
        }
    }

    /// Updates are whole screens (on a terminal), not lines.
    pub fn screen(&self) -> bool {
        self.screen
    }

    /// Queue one update; dropped (and counted) when the reader is behind.
    pub fn send(&mut self, frame: String) {
        self.offered += 1;
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(frame);
        }
    }

    /// Stop: wait up to `wait` for the queued updates to be written (and the terminal's screen
    /// restored); return how many updates were never written.
    pub fn finish(mut self, wait: Duration) -> u64 {
        drop(self.tx.take());
        let _ = self.done.recv_timeout(wait);
        self.offered
            .saturating_sub(self.written.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A writer that blocks until `open` is set, like a pipe nobody reads.
    struct Stuck(Arc<Mutex<bool>>, Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Stuck {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            while !*self.0.lock().unwrap() {
                std::thread::sleep(Duration::from_millis(5));
            }
            self.1.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reader_that_never_reads_costs_updates_not_time() {
        let open = Arc::new(Mutex::new(false));
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut w = LiveWriter::start(Stuck(open.clone(), got.clone()), false);
        // Sending never waits on the reader (this loop would hang if it did).
        for i in 0..1000 {
            w.send(format!("line {i}\n"));
        }
        let dropped = w.finish(Duration::from_millis(50));
        // At most the queue and the one being written were kept.
        assert!(dropped >= 1000 - QUEUE as u64 - 1, "{dropped}");
        assert!(got.lock().unwrap().is_empty());
        *open.lock().unwrap() = true;
    }

    #[test]
    fn a_reader_that_reads_gets_every_update_and_the_screen_is_restored() {
        let open = Arc::new(Mutex::new(true));
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut w = LiveWriter::start(Stuck(open, got.clone()), true);
        for i in 0..3 {
            w.send(format!("{CLEAR}frame {i}\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(w.finish(Duration::from_secs(5)), 0);
        let s = String::from_utf8(got.lock().unwrap().clone()).unwrap();
        assert!(s.starts_with(ENTER_ALT_SCREEN), "{s:?}");
        assert!(s.ends_with(LEAVE_ALT_SCREEN), "{s:?}");
        assert!(s.contains("frame 2"));
    }
}
