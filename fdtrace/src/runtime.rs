//! Language runtimes that run the program's code as JIT-compiled machine code (Node.js, Java):
//! which processes they are, their frames named from the perf map the runtime writes
//! (`/tmp/perf-PID.map`: `node --perf-basic-prof`, `jcmd PID Compiler.perfmap`), and which
//! frames are the runtime's own rather than the program's.
use std::path::{Path, PathBuf};

/// The `module` of a frame named from a perf map.
pub const JIT_MODULE: &str = "[jit]";

/// The `module` of a Java method's frame named from the JVM's perf map.
pub const JAVA_MODULE: &str = "java";

/// A HotSpot perf-map symbol of a compiled method (`RET package.Class.method(ARGS)`, as
/// `jcmd PID Compiler.perfmap` writes it), as Java stack traces name it: `package.Class.method`.
fn java_method(symbol: &str) -> Option<String> {
    let (head, args) = symbol.split_once('(')?;
    if !args.contains(')') || symbol.starts_with("JS:") {
        return None;
    }
    let name = head.rsplit(' ').next()?;
    let (class, method) = name.rsplit_once('.')?;
    let ident = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '$' | '.' | '<' | '>'))
    };
    (ident(class) && ident(method)).then(|| name.to_string())
}

/// Is a Java method (`package.Class.method`) the JDK's own (its class library)?
pub fn is_jdk_method(name: &str) -> bool {
    ["java.", "javax.", "jdk.", "sun.", "com.sun."]
        .iter()
        .any(|p| name.starts_with(p))
}

/// A runtime fdtrace knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Node,
    Java,
    Python,
}

impl Runtime {
    /// How to have the runtime name its JIT frames, for a report on a process without them.
    pub fn naming_hint(self) -> &'static str {
        match self {
            Runtime::Node => {
                "JavaScript frames have no names: start node with --perf-basic-prof --interpreted-frames-native-stack (it writes /tmp/perf-PID.map; the second flag names functions V8 has not compiled yet)"
            }
            Runtime::Java => {
                "Java frames are read from the JVM's own structures (HotSpot on x86-64; checked with OpenJDK 17), and this JVM's could not be read: its compiled methods are named from the perf map fdtrace asks it for (as `jcmd PID Compiler.perfmap`, JDK 17+) if it runs with -XX:+PreserveFramePointer, and its interpreted methods not at all"
            }
            Runtime::Python => {
                "Python frames are read from CPython 3.11 to 3.13 only: for another version the interpreter's C frames are shown"
            }
        }
    }
}

/// The runtime an executable is, by its file name (`node`, `nodejs`, `java`, `python3.11`).
pub fn of_exe(exe: &Path) -> Option<Runtime> {
    let resolved = std::fs::read_link(exe).unwrap_or_else(|_| exe.to_path_buf());
    of_name(resolved.file_name()?.to_str()?)
}

fn of_name(name: &str) -> Option<Runtime> {
    match name {
        "node" | "nodejs" => Some(Runtime::Node),
        "java" => Some(Runtime::Java),
        _ if name
            .strip_prefix("python")
            .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.')) =>
        {
            Some(Runtime::Python)
        }
        _ => None,
    }
}

/// Is a frame in `module` the runtime's own native code (its executable: V8 and libuv inside
/// `node`, CPython inside `python3.11`)? Those are never the program's frame.
pub fn is_runtime_module(module: &str) -> bool {
    of_module(module).is_some()
}

/// The runtime whose executable `module` (a frame's binary) is.
pub fn of_module(module: &str) -> Option<Runtime> {
    let name = module.rsplit('/').next()?;
    // libpython, and the native modules of Python's standard library (`lib-dynload`) and of
    // installed packages (`site-packages`).
    if name.starts_with("libpython")
        || (name.contains(".so") && !crate::python_stack::is_program_file(module))
    {
        return Some(Runtime::Python);
    }
    if name == "libjvm.so" {
        return Some(Runtime::Java);
    }
    of_name(name)
}

/// One symbol of a perf map.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    start: u64,
    end: u64,
    name: String,
}

/// A JIT frame's name as a perf map gives it, made readable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JitName {
    /// The function (V8's tier mark removed), or the runtime's stub as named (`Builtin:…`).
    pub function: String,
    /// The script or class file, when the entry gives one.
    pub file: Option<String>,
    /// The line, where the runtime gives it (Python frames).
    pub line: Option<u32>,
    /// Is it the program's code (not the runtime's stubs, not Node's own `node:` modules)?
    pub program: bool,
    /// The frame's `module` in reports: [`JIT_MODULE`], or `python` for Python frames.
    pub module: &'static str,
    /// Inlined by the JIT into the frame after it (a Java method in a compiled caller).
    pub inlined: bool,
}

impl JitName {
    /// Parse a perf-map symbol. V8: `JS:~name file:line:col` (`~` interpreted, `^` baseline,
    /// `+` Maglev, `*` optimized; older: `LazyCompile:*name file:line`), `Builtin:X`,
    /// `BytecodeHandler:X`, `Stub:X`. HotSpot: `Interpreter`, `StubRoutines…`, or a method.
    pub fn parse(symbol: &str) -> JitName {
        let code = ["JS:", "LazyCompile:", "Function:", "Script:"]
            .iter()
            .find_map(|p| symbol.strip_prefix(p));
        if let Some(rest) = code {
            let rest = rest.trim_start_matches(['~', '^', '+', '*']);
            let (func, file) = match rest.split_once(' ') {
                Some((f, loc)) => (f, Some(loc)),
                None => (rest, None),
            };
            // The location is the function's definition (`file:line:col`): the file alone, as
            // the line of the call within it is not known.
            let file = file.map(|l| {
                let mut s = l.trim();
                for _ in 0..2 {
                    if let Some((head, tail)) = s.rsplit_once(':')
                        && !tail.is_empty()
                        && tail.chars().all(|c| c.is_ascii_digit())
                    {
                        s = head;
                    }
                }
                s.strip_prefix("file://").unwrap_or(s).to_string()
            });
            let func = if func.is_empty() { "(anonymous)" } else { func };
            let program = file
                .as_deref()
                .is_some_and(|f| !f.is_empty() && !f.starts_with("node:"));
            return JitName {
                function: func.to_string(),
                file: file.filter(|f| !f.is_empty()),
                line: None,
                program,
                module: JIT_MODULE,
                inlined: false,
            };
        }
        if let Some(method) = java_method(symbol) {
            return JitName {
                program: !is_jdk_method(&method),
                function: method,
                file: None,
                line: None,
                module: JAVA_MODULE,
                inlined: false,
            };
        }
        let runtime_stub = symbol.contains("Builtin:")
            || symbol.starts_with("BytecodeHandler:")
            || symbol.starts_with("Stub:")
            || symbol.starts_with("RegExp:")
            || symbol.starts_with("Interpreter")
            || symbol.starts_with("StubRoutines")
            || symbol.starts_with("Stub<")
            || !symbol.contains(['.', ':']);
        JitName {
            function: symbol.to_string(),
            file: None,
            line: None,
            program: !runtime_stub,
            module: JIT_MODULE,
            inlined: false,
        }
    }
}

/// A process's perf map, re-read when it has grown and an address is not found.
pub struct PerfMap {
    path: PathBuf,
    /// Sorted by start; a later entry for the same code replaces an earlier one.
    entries: Vec<Entry>,
    read_len: u64,
}

impl PerfMap {
    /// The perf map of `pid` (`/tmp/perf-NSPID.map` inside its mount namespace), if it has one.
    pub fn of(pid: u32) -> Option<PerfMap> {
        let nspid = crate::procinfo::nspid(pid).unwrap_or(pid);
        let path = PathBuf::from(format!("/proc/{pid}/root/tmp/perf-{nspid}.map"));
        path.exists().then(|| PerfMap {
            path,
            entries: Vec::new(),
            read_len: 0,
        })
    }

    /// The symbol holding `addr`, re-reading the file once if it grew.
    pub fn lookup(&mut self, addr: u64) -> Option<JitName> {
        if let Some(e) = self.find(addr) {
            return Some(JitName::parse(&e.name));
        }
        let len = std::fs::metadata(&self.path).ok()?.len();
        if len == self.read_len {
            return None;
        }
        self.reload();
        self.find(addr).map(|e| JitName::parse(&e.name))
    }

    fn find(&self, addr: u64) -> Option<&Entry> {
        let i = self.entries.partition_point(|e| e.start <= addr);
        let e = self.entries.get(i.checked_sub(1)?)?;
        (addr < e.end).then_some(e)
    }

    fn reload(&mut self) {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return;
        };
        self.read_len = text.len() as u64;
        self.entries = parse(&text);
    }
}

/// The entries of a perf map (`START SIZE NAME`, hexadecimal), sorted; where code was replaced
/// (the same start written again), the later line wins.
fn parse(text: &str) -> Vec<Entry> {
    let mut by_start: std::collections::BTreeMap<u64, Entry> = Default::default();
    for line in text.lines() {
        let mut it = line.splitn(3, ' ');
        let (Some(start), Some(size), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let (Ok(start), Ok(size)) = (
            u64::from_str_radix(start.trim_start_matches("0x"), 16),
            u64::from_str_radix(size.trim_start_matches("0x"), 16),
        ) else {
            continue;
        };
        if size == 0 {
            continue;
        }
        by_start.insert(
            start,
            Entry {
                start,
                end: start.saturating_add(size),
                name: name.to_string(),
            },
        );
    }
    by_start.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_by_name() {
        assert_eq!(of_name("node"), Some(Runtime::Node));
        assert_eq!(of_name("python3.11"), Some(Runtime::Python));
        assert_eq!(of_name("python3"), Some(Runtime::Python));
        assert_eq!(of_name("java"), Some(Runtime::Java));
        assert_eq!(of_name("pythonista"), None);
        assert_eq!(of_name("leaky"), None);
        assert!(is_runtime_module("/usr/bin/node"));
        assert!(!is_runtime_module("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert_eq!(
            of_module("/opt/py/lib/libpython3.12.so.1.0"),
            Some(Runtime::Python)
        );
        assert_eq!(
            of_module("/opt/py/lib/python3.12/lib-dynload/_socket.cpython-312-x86_64-linux-gnu.so"),
            Some(Runtime::Python)
        );
        assert_eq!(of_module("/srv/app/libleak.so"), None);
    }

    #[test]
    fn v8_names() {
        let n = JitName::parse("JS:~openJournal /tmp/rt/leak.js:4:21");
        assert_eq!(n.function, "openJournal");
        assert_eq!(n.file.as_deref(), Some("/tmp/rt/leak.js"));
        assert!(n.program);
        let n = JitName::parse("JS:*openSync node:fs:588:18");
        assert_eq!(n.function, "openSync");
        assert!(!n.program, "Node's own modules are the runtime's");
        let n = JitName::parse("LazyCompile:^tick file:///srv/app.mjs:12");
        assert_eq!(n.function, "tick");
        assert_eq!(n.file.as_deref(), Some("/srv/app.mjs"));
        let n = JitName::parse("JS:~ /srv/a.js:1:1");
        assert_eq!(n.function, "(anonymous)");
        assert!(!JitName::parse("Builtin:InterpreterEntryTrampoline").program);
        assert!(!JitName::parse("BytecodeHandler:LdaZero").program);
        assert!(!JitName::parse("Interpreter").program);
        let n = JitName::parse("java.io.FileInputStream Leak.openJournal(java.lang.String)");
        assert_eq!(n.function, "Leak.openJournal");
        assert_eq!(n.module, JAVA_MODULE);
        assert!(n.program);
        let n = JitName::parse("void java.io.FileInputStream.<init>(java.io.File)");
        assert_eq!(n.function, "java.io.FileInputStream.<init>");
        assert!(!n.program, "the JDK's classes are the runtime's");
        let n = JitName::parse("void com.example.Pool$Conn.open()");
        assert_eq!(n.function, "com.example.Pool$Conn.open");
        assert!(n.program);
        assert!(!JitName::parse("StubRoutines (1)").program);
    }

    #[test]
    fn lookups_take_the_newest_code() {
        let map = parse(
            "7f00 100 JS:~a /x.js:1:1\n7f00 80 JS:*b /x.js:5:1\n8000 10 Builtin:Y\nbad line\n",
        );
        assert_eq!(map.len(), 2);
        let pm = PerfMap {
            path: PathBuf::new(),
            entries: map,
            read_len: 0,
        };
        assert_eq!(pm.find(0x7f10).unwrap().name, "JS:*b /x.js:5:1");
        assert!(
            pm.find(0x7f90).is_none(),
            "past the newest code at that start"
        );
        assert!(pm.find(0x8010).is_none());
        assert_eq!(pm.find(0x800f).unwrap().name, "Builtin:Y");
    }
}
