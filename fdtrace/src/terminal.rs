//! The terminal the live view and `fdtrace top` draw on: its width, and `q` to quit. Keys are
//! read without canonical mode or echo, but with the terminal's signals (Ctrl-C still sends
//! SIGINT) and output processing left as they are; the settings are restored when the
//! [`QuitKey`] is dropped.
use std::{
    io::{IsTerminal as _, Read as _},
    sync::mpsc,
};

/// Switch to the terminal's alternate screen and hide the cursor (a redrawn view stays out of
/// the scrollback); and back.
pub const ENTER_ALT_SCREEN: &str = "\x1b[?1049h\x1b[?25l";
pub const LEAVE_ALT_SCREEN: &str = "\x1b[?25h\x1b[?1049l";

/// Columns of the terminal on `fd`, when it is one.
pub fn width(fd: i32) -> Option<usize> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

/// `line` cut to `width` characters (the last one an ellipsis when cut).
pub fn fit(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_string();
    }
    let mut s: String = line.chars().take(width.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// Every line of `text` cut to `width`.
pub fn fit_lines(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len());
    for l in text.lines() {
        out.push_str(&fit(l, width));
        out.push('\n');
    }
    out
}

/// `q` pressed on the terminal on stdin.
pub struct QuitKey {
    pressed: mpsc::Receiver<()>,
    saved: libc::termios,
}

impl QuitKey {
    /// Listen for `q` when stdin is a terminal (None otherwise).
    pub fn listen() -> Option<QuitKey> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr/tcsetattr on stdin with a termios it filled.
        unsafe {
            if libc::tcgetattr(0, &mut saved) != 0 {
                return None;
            }
            let mut t = saved;
            t.c_lflag &= !(libc::ICANON | libc::ECHO);
            t.c_cc[libc::VMIN] = 1;
            t.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
        }
        let (tx, pressed) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("fdtrace-keys".into())
            .spawn(move || {
                let mut b = [0u8; 1];
                while let Ok(1) = std::io::stdin().lock().read(&mut b) {
                    if matches!(b[0], b'q' | b'Q') && tx.send(()).is_err() {
                        return;
                    }
                }
            });
        let key = QuitKey { pressed, saved };
        spawned.ok().map(|_| key)
    }

    pub fn pressed(&self) -> bool {
        self.pressed.try_recv().is_ok()
    }

    /// Wait up to `d` for `q`.
    pub fn wait(&self, d: std::time::Duration) -> bool {
        self.pressed.recv_timeout(d).is_ok()
    }
}

impl Drop for QuitKey {
    fn drop(&mut self) {
        // SAFETY: restoring the settings read in `listen`.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// From now on SIGINT and SIGTERM only set a flag ([`interrupted`]), so that a screen can be
/// restored before the process ends.
pub fn catch_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// SIGINT or SIGTERM arrived since [`catch_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_to_the_width() {
        assert_eq!(fit("abcdef", 6), "abcdef");
        assert_eq!(fit("abcdefg", 6), "abcde…");
        assert_eq!(fit("ééééééé", 3), "éé…");
        assert_eq!(fit_lines("abc\nabcdef\n", 4), "abc\nabc…\n");
    }
}
