//! A frame as text, written once: where people read it (`leak_file at /src/leaky.c:20`: the
//! report, the live view, metrics' site labels) and as a short name among others
//! (`leak_file leaky.c:20`: timelines, folded stacks); and as a key that names the same code in
//! two recordings (diffs).
use crate::{report::JsonFrame, symbolize::Frame};

/// The parts of a frame that are shown, from a symbolized [`Frame`] or a report's
/// [`JsonFrame`].
#[derive(Clone, Copy, Debug)]
pub struct Parts<'a> {
    pub function: Option<&'a str>,
    pub file: Option<&'a str>,
    pub line: Option<u32>,
    pub module: Option<&'a str>,
    /// None for a marker frame (`[stack dropped under load]`): no code behind it.
    pub addr: Option<u64>,
}

impl<'a> From<&'a Frame> for Parts<'a> {
    fn from(f: &'a Frame) -> Self {
        Parts {
            function: f.function.as_deref(),
            file: f.file.as_deref(),
            line: f.line,
            module: f.module.as_deref(),
            addr: (f.addr != 0).then_some(f.addr),
        }
    }
}

impl<'a> From<&'a JsonFrame> for Parts<'a> {
    fn from(f: &'a JsonFrame) -> Self {
        let addr = u64::from_str_radix(f.addr.trim_start_matches("0x"), 16).unwrap_or(0);
        Parts {
            function: f.function.as_deref(),
            file: f.file.as_deref(),
            line: f.line,
            module: f.module.as_deref(),
            addr: (addr != 0).then_some(addr),
        }
    }
}

/// The last component of a path.
pub fn base(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Where people read a frame: `leak_file at /src/leaky.c:20`, `f at /src/x.c` without a line;
/// without a file its binary, `__libc_open64 (libc.so.6)`; a marker frame its name alone;
/// anything else its address, `?? [0x7f2a…]`.
pub fn at<'a>(f: impl Into<Parts<'a>>) -> String {
    let f = f.into();
    let func = f.function.unwrap_or("??");
    match (f.file, f.line) {
        (Some(file), Some(line)) => format!("{func} at {file}:{line}"),
        (Some(file), None) => format!("{func} at {file}"),
        _ => match (f.module, f.addr) {
            (Some(m), _) => format!("{func} ({})", base(m)),
            (None, None) => func.to_string(),
            (None, Some(addr)) => format!("{func} [{addr:#x}]"),
        },
    }
}

/// A frame among others, in a few words: `leak_file leaky.c:20`, `f x.c` without a line,
/// `__libc_open64 (libc.so.6)` without a file.
pub fn short<'a>(f: impl Into<Parts<'a>>) -> String {
    let f = f.into();
    let func = f.function.unwrap_or("??");
    match (f.file, f.line) {
        (Some(file), Some(line)) => format!("{func} {}:{line}", base(file)),
        (Some(file), None) => format!("{func} {}", base(file)),
        _ => match f.module {
            Some(m) => format!("{func} ({})", base(m)),
            None => func.to_string(),
        },
    }
}

/// The same code in two recordings (`fdtrace diff`): function, file, line and binary, never the
/// address (another run, another layout); a Go marker frame by what it marks (it names another
/// goroutine in each recording).
pub fn key(f: &JsonFrame) -> String {
    if let Some(key) = f
        .function
        .as_deref()
        .and_then(crate::link_markers::marker_key)
    {
        return key.into();
    }
    let mut s = f.function.clone().unwrap_or_else(|| "??".into());
    if let Some(file) = &f.file {
        s += &format!(" {file}");
        if let Some(l) = f.line {
            s += &format!(":{l}");
        }
    }
    if let Some(m) = &f.module {
        s += &format!(" ({m})");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: Option<&str>, file: Option<&str>, line: Option<u32>) -> Frame {
        Frame {
            function: function.map(String::from),
            file: file.map(String::from),
            line,
            addr: 0x7f00,
            module: Some("/usr/lib/x86_64-linux-gnu/libc.so.6".into()),
            inlined: false,
        }
    }

    #[test]
    fn every_shape_of_frame() {
        let full = frame(Some("leak_file"), Some("/src/leaky.c"), Some(20));
        assert_eq!(at(&full), "leak_file at /src/leaky.c:20");
        assert_eq!(short(&full), "leak_file leaky.c:20");
        let no_line = frame(Some("f"), Some("/src/x.c"), None);
        assert_eq!(at(&no_line), "f at /src/x.c");
        assert_eq!(short(&no_line), "f x.c");
        let no_file = frame(Some("__libc_open64"), None, None);
        assert_eq!(at(&no_file), "__libc_open64 (libc.so.6)");
        assert_eq!(short(&no_file), "__libc_open64 (libc.so.6)");
        let bare = Frame {
            module: None,
            ..frame(None, None, None)
        };
        assert_eq!(at(&bare), "?? [0x7f00]");
        assert_eq!(short(&bare), "??");
        let marker = Frame {
            function: Some("[stack dropped under load]".into()),
            addr: 0,
            ..bare.clone()
        };
        assert_eq!(at(&marker), "[stack dropped under load]");
        // A report's frame reads as the frame it came from.
        let json = JsonFrame {
            function: bare.function.clone(),
            file: None,
            line: None,
            addr: "0x7f00".into(),
            module: None,
            inlined: false,
        };
        assert_eq!(at(&json), at(&bare));
    }
}
