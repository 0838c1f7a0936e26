//! Which frame of a stack is the program's own code, as a developer would point at it: not the
//! C library, the language's standard library (Go's packages in GOROOT, Rust's `std`), a
//! runtime's native code or its library frames; the first such frame with a line is the user
//! frame a site is named by.
use crate::symbolize::Frame;

/// Top-level packages of the Go standard library (and `vendor`, where it vendors its own
/// dependencies). A package path whose first element is one of these is in GOROOT: user
/// modules cannot shadow them.
const GO_STD: &[&str] = &[
    "archive",
    "bufio",
    "builtin",
    "bytes",
    "cmp",
    "cmd",
    "compress",
    "container",
    "context",
    "crypto",
    "database",
    "debug",
    "embed",
    "encoding",
    "errors",
    "expvar",
    "flag",
    "fmt",
    "go",
    "hash",
    "html",
    "image",
    "index",
    "internal",
    "io",
    "iter",
    "log",
    "maps",
    "math",
    "mime",
    "net",
    "os",
    "path",
    "plugin",
    "reflect",
    "regexp",
    "runtime",
    "slices",
    "sort",
    "strconv",
    "strings",
    "structs",
    "sync",
    "syscall",
    "testing",
    "text",
    "time",
    "unicode",
    "unique",
    "unsafe",
    "vendor",
    "weak",
];

/// Crates of Rust's standard library (`library/<crate>` in the Rust source tree).
const RUST_STD: &[&str] = &[
    "std",
    "core",
    "alloc",
    "proc_macro",
    "panic_unwind",
    "panic_abort",
    "test",
    "unwind",
    "backtrace",
    "stdarch",
    "portable-simd",
    "compiler-builtins",
];

/// The package path of a Go function symbol: `net/http` for `net/http.(*Server).Serve`,
/// `github.com/a/b` for `github.com/a/b.F`, `main` for `main.main.func1`. None when the name does
/// not look like a Go symbol (C and Rust names).
pub fn go_package(function: &str) -> Option<&str> {
    if function.contains("::") || function.contains(' ') {
        return None;
    }
    // Generic instantiations carry type arguments with their own dots and slashes.
    let name = function.split('[').next().unwrap_or(function);
    let start = name.rfind('/').map_or(0, |i| i + 1);
    let dot = name[start..].find('.')?;
    let pkg = &name[..start + dot];
    let first = pkg.chars().next()?;
    (first.is_ascii_alphabetic() || first == '_').then_some(pkg)
}

/// Is this Go package in the standard library (GOROOT)? Compiler-generated helpers (`type:.eq.T`,
/// `go:buildid`, `type..hash.T` in older releases) count as runtime too.
pub fn is_go_std_package(pkg: &str) -> bool {
    let first = pkg.split('/').next().unwrap_or(pkg);
    GO_STD.contains(&first) || pkg == "type" || pkg.starts_with("type:") || pkg.starts_with("go:")
}

/// Is this source file part of Rust's standard library? Its debug info names files
/// `/rustc/<commit>/library/std/src/...` (remapped), or the rust-src copy in a toolchain.
pub fn is_rust_std_file(file: &str) -> bool {
    let rest = if let Some(r) = file.strip_prefix("/rustc/") {
        // `/rustc/<commit>/library/...`: anything the compiler ships.
        return r.contains('/');
    } else if let Some(i) = file.find("/lib/rustlib/src/rust/library/") {
        &file[i + "/lib/rustlib/src/rust/library/".len()..]
    } else if let Some(r) = file.strip_prefix("library/") {
        r
    } else {
        return false;
    };
    let krate = rest.split('/').next().unwrap_or(rest);
    RUST_STD.contains(&krate)
}

/// A Rust symbol of the standard library (`std::fs::File::open`, `<core::x as y>::z`,
/// `<&dyn core::ops::Fn<..> as ..>::call`), for frames without line information.
fn is_rust_std_name(function: &str) -> bool {
    let mut f = function.trim_start_matches('<');
    loop {
        let before = f;
        for p in ["&", "mut ", "dyn ", "*const ", "*mut "] {
            f = f.strip_prefix(p).unwrap_or(f);
        }
        if f == before {
            break;
        }
    }
    let krate = f.split("::").next().unwrap_or(f);
    f.contains("::") && RUST_STD.contains(&krate)
}

/// The GOROOTs the frames' Go standard-library files live under: `/usr/lib/go-1.19` when
/// `runtime.main` is at `/usr/lib/go-1.19/src/runtime/proc.go`.
pub fn goroots(frames: &[Frame]) -> Vec<String> {
    let mut roots: Vec<String> = Vec::new();
    for f in frames {
        let (Some(func), Some(file)) = (&f.function, &f.file) else {
            continue;
        };
        let Some(pkg) = go_package(func).filter(|p| is_go_std_package(p)) else {
            continue;
        };
        if let Some(i) = file.find(&format!("/src/{pkg}/")) {
            let root = &file[..i];
            if !root.is_empty() && !roots.iter().any(|r| r == root) {
                roots.push(root.to_string());
            }
        }
    }
    roots
}

/// Is this frame part of a system library or a language runtime rather than the program?
pub fn is_library_frame(f: &Frame) -> bool {
    is_library_frame_in(f, &[])
}

/// [`is_library_frame`], also counting every file under one of `goroots` (see [`goroots`]) as
/// the Go standard library.
pub fn is_library_frame_in(f: &Frame, goroots: &[String]) -> bool {
    if f.module.is_none()
        && f.function
            .as_deref()
            .is_some_and(crate::link_markers::is_marker_text)
    {
        // A marker between two stacks is no code at all.
        return true;
    }
    if let Some(m) = &f.module
        && (m.starts_with("/lib/")
            || m.starts_with("/lib64/")
            || m.starts_with("/usr/lib/")
            || m.starts_with("/usr/lib64/"))
        && m.rsplit('/')
            .next()
            .is_some_and(|name| name.contains(".so"))
    {
        // A shared library installed by the system (libc, libstdc++, ...).
        return true;
    }
    if let Some(m) = &f.module {
        // JIT code named from a perf map: the program's when it has a source file that is not
        // the runtime's own (`node:fs`); the runtime's native code (V8, libuv, CPython) never.
        if m == crate::runtime::JIT_MODULE {
            return f
                .file
                .as_deref()
                .is_none_or(|file| file.starts_with("node:"));
        }
        if m == crate::runtime::JAVA_MODULE {
            return f
                .function
                .as_deref()
                .is_none_or(crate::runtime::is_jdk_method);
        }
        if m == crate::python_code::PY_MODULE {
            return f
                .file
                .as_deref()
                .is_none_or(|file| !crate::python_stack::is_program_file(file));
        }
        if crate::runtime::is_runtime_module(m) {
            return true;
        }
    }
    let Some(func) = &f.function else {
        return true;
    };
    if let Some(file) = &f.file {
        if is_rust_std_file(file) {
            return true;
        }
        if goroots.iter().any(|g| {
            file.strip_prefix(g.as_str())
                .is_some_and(|r| r.starts_with("/src/"))
        }) {
            return true;
        }
    }
    if is_rust_std_name(func) {
        return true;
    }
    // Go symbols by their package, unless the frame's file says it is C (`sort.part.0` is a
    // C function `sort` split by GCC).
    let go_file = f.file.as_deref().is_none_or(|file| {
        file.ends_with(".go") || file.ends_with(".s") || file.ends_with("<autogenerated>")
    });
    go_file && go_package(func).is_some_and(is_go_std_package)
}

/// Index of the first frame in the program's own code (not libc, not a language runtime or
/// standard library). Where some frames have source lines, the first of those: a static binary
/// holds its C library too (musl's `__syscall_cp_c`, named but without lines), and the line
/// is what the report is for.
pub fn user_frame(frames: &[Frame]) -> Option<usize> {
    let roots = goroots(frames);
    let own = |f: &Frame| !is_library_frame_in(f, &roots);
    // A frame a language runtime named is the program's code as the runtime knows it, line or
    // not (a compiled Java method, a JavaScript function).
    let runtime_named = |f: &Frame| {
        f.module.as_deref().is_some_and(|m| {
            [
                crate::runtime::JIT_MODULE,
                crate::runtime::JAVA_MODULE,
                crate::python_code::PY_MODULE,
            ]
            .contains(&m)
        })
    };
    frames
        .iter()
        .position(|f| own(f) && (f.line.is_some() || runtime_named(f)))
        .or_else(|| frames.iter().position(own))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: Option<&str>, file: Option<&str>, module: &str) -> Frame {
        Frame {
            function: function.map(String::from),
            file: file.map(String::from),
            line: file.map(|_| 10),
            addr: 0x1000,
            module: Some(module.to_string()),
            inlined: false,
        }
    }

    const GOROOT: &str = "/usr/lib/go-1.19";

    fn go(function: &str, file: &str) -> Frame {
        frame(Some(function), Some(file), "/tmp/goleak")
    }

    #[test]
    fn go_package_of_symbols() {
        assert_eq!(go_package("main.leakCreate"), Some("main"));
        assert_eq!(go_package("main.main.func1"), Some("main"));
        assert_eq!(go_package("os.OpenFile"), Some("os"));
        assert_eq!(go_package("net/http.(*Server).Serve"), Some("net/http"));
        assert_eq!(
            go_package("runtime/internal/syscall.Syscall6"),
            Some("runtime/internal/syscall")
        );
        assert_eq!(
            go_package("github.com/lib/pq.(*conn).Close"),
            Some("github.com/lib/pq")
        );
        assert_eq!(
            go_package("myapp/internal/db.Open"),
            Some("myapp/internal/db")
        );
        assert_eq!(
            go_package("sync/atomic.(*Pointer[net/http.conn]).Load"),
            Some("sync/atomic")
        );
        assert_eq!(go_package("main.Map[go.shape.string_0]"), Some("main"));
        // C and Rust names are not Go symbols.
        assert_eq!(go_package("__libc_open64"), None);
        assert_eq!(go_package("std::fs::File::open"), None);
        assert_eq!(go_package("<std::fs::File>::open"), None);
    }

    #[test]
    fn go_standard_library_and_runtime_are_library_frames() {
        for (func, file) in [
            (
                "runtime/internal/syscall.Syscall6",
                "src/runtime/internal/syscall/asm_linux_amd64.s",
            ),
            ("syscall.Syscall6", "src/syscall/syscall_linux.go"),
            ("syscall.openat", "src/syscall/zsyscall_linux_amd64.go"),
            ("os.openFileNolog", "src/os/file_unix.go"),
            ("os.OpenFile", "src/os/file.go"),
            ("os.Create", "src/os/file.go"),
            ("internal/poll.(*FD).Init", "src/internal/poll/fd_unix.go"),
            ("sync.(*Once).doSlow", "src/sync/once.go"),
            ("net.(*sysDialer).dialSingle", "src/net/dial.go"),
            ("net/http.(*conn).serve", "src/net/http/server.go"),
            ("crypto/tls.(*Conn).Handshake", "src/crypto/tls/conn.go"),
            ("bufio.(*Reader).Read", "src/bufio/bufio.go"),
            ("io.ReadAll", "src/io/io.go"),
            ("runtime.goexit", "src/runtime/asm_amd64.s"),
            (
                "vendor/golang.org/x/net/dns/dnsmessage.(*Parser).Start",
                "src/vendor/golang.org/x/net/dns/dnsmessage/message.go",
            ),
        ] {
            let f = go(func, &format!("{GOROOT}/{file}"));
            assert!(is_library_frame(&f), "{func} by its name");
            assert!(
                is_library_frame_in(&f, &[GOROOT.into()]),
                "{func} in GOROOT"
            );
        }
        // Built with -trimpath: only the names tell.
        assert!(is_library_frame(&go("os.Open", "os/file.go")));
        // A GOROOT file of a package this list does not know is still library.
        let new_pkg = go("newstdpkg.F", &format!("{GOROOT}/src/newstdpkg/f.go"));
        assert!(!is_library_frame(&new_pkg));
        assert!(is_library_frame_in(&new_pkg, &[GOROOT.into()]));
        // Compiler-generated helpers.
        assert!(is_library_frame(&go("type:.eq.os.File", "<autogenerated>")));
        assert!(is_library_frame(&go("type..eq.os.File", "<autogenerated>")));
        assert!(is_library_frame(&go(
            "net/http.(*onceCloseListener).Accept",
            "./<autogenerated>"
        )));
    }

    #[test]
    fn go_user_code_is_not_library() {
        let roots = [GOROOT.to_string()];
        for (func, file) in [
            (
                "main.leakCreate",
                "/work/fdtrace/tests/programs/goleak/main.go",
            ),
            ("main.main.func1", "/home/u/srv/main.go"),
            (
                "github.com/lib/pq.(*conn).query",
                "/root/go/pkg/mod/github.com/lib/pq@v1.10.9/conn.go",
            ),
            ("myapp/internal/db.Open", "/src/myapp/internal/db/db.go"),
        ] {
            let f = go(func, file);
            assert!(!is_library_frame(&f), "{func}");
            assert!(!is_library_frame_in(&f, &roots), "{func}");
        }
    }

    #[test]
    fn goroots_come_from_the_runtime_frames() {
        let frames = [
            go("os.OpenFile", "/usr/lib/go-1.19/src/os/file.go"),
            go("main.leakOpen", "/w/goleak/main.go"),
            go("runtime.main", "/usr/lib/go-1.19/src/runtime/proc.go"),
            go("runtime.goexit", "/usr/lib/go-1.19/src/runtime/asm_amd64.s"),
            go("os.Open", "/usr/local/go/src/os/file.go"),
        ];
        assert_eq!(goroots(&frames), vec!["/usr/lib/go-1.19", "/usr/local/go"]);
        assert_eq!(user_frame(&frames), Some(1));
    }

    #[test]
    fn go_user_frame_of_a_whole_stack() {
        let frames = [
            go(
                "runtime/internal/syscall.Syscall6",
                "/usr/lib/go-1.19/src/runtime/internal/syscall/asm_linux_amd64.s",
            ),
            go(
                "syscall.Syscall6",
                "/usr/lib/go-1.19/src/syscall/syscall_linux.go",
            ),
            go("os.Create", "/usr/lib/go-1.19/src/os/file.go"),
            go("main.leakCreate", "/w/goleak/main.go"),
            go("main.main", "/w/goleak/main.go"),
            go("runtime.main", "/usr/lib/go-1.19/src/runtime/proc.go"),
        ];
        assert_eq!(user_frame(&frames), Some(3));
        // The runtime's own descriptors (netpoll's epoll) have the caller's frame as user frame.
        let frames = [
            go(
                "runtime.epollcreate1",
                "/usr/lib/go-1.19/src/runtime/sys_linux_amd64.s",
            ),
            go("sync.(*Once).doSlow", "/usr/lib/go-1.19/src/sync/once.go"),
            go(
                "internal/poll.(*FD).Init",
                "/usr/lib/go-1.19/src/internal/poll/fd_unix.go",
            ),
            go("os.newFile", "/usr/lib/go-1.19/src/os/file_unix.go"),
            go("main.leakCreate", "/w/goleak/main.go"),
        ];
        assert_eq!(user_frame(&frames), Some(4));
    }

    #[test]
    fn a_static_binary_s_own_line_comes_before_its_c_library() {
        // musl linked in: its functions are named, without lines.
        let frames = [
            frame(Some("__syscall_cp_c"), None, "/app/leak"),
            frame(Some("open64"), None, "/app/leak"),
            frame(Some("main"), Some("/src/leak.c"), "/app/leak"),
            frame(Some("libc_start_main_stage2"), None, "/app/leak"),
        ];
        assert_eq!(user_frame(&frames), Some(2));
        // Without lines anywhere (a stripped program), the first of its own frames.
        let stripped = [
            frame(Some("open"), None, "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            frame(Some("load_config"), None, "/app/server"),
            frame(Some("main"), None, "/app/server"),
        ];
        assert_eq!(user_frame(&stripped), Some(1));
    }

    const RUSTC: &str = "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860";

    fn rust(function: &str, file: &str) -> Frame {
        frame(Some(function), Some(file), "/tmp/rustleak")
    }

    #[test]
    fn rust_std_core_alloc_are_library_frames() {
        for (func, file) in [
            ("<std::sys::fs::unix::File>::open_c", format!("{RUSTC}/library/std/src/sys/fs/unix.rs")),
            (
                "std::sys::helpers::small_c_string::run_with_cstr_stack::<std::sys::fs::unix::File>",
                format!("{RUSTC}/library/std/src/sys/helpers/small_c_string.rs"),
            ),
            ("std::fs::File::create", format!("{RUSTC}/library/std/src/fs.rs")),
            ("core::ops::function::FnOnce::call_once", format!("{RUSTC}/library/core/src/ops/function.rs")),
            ("<alloc::vec::Vec<u8>>::push", format!("{RUSTC}/library/alloc/src/vec/mod.rs")),
            // Not remapped: the toolchain's rust-src, or paths relative to the Rust tree.
            (
                "std::fs::File::open",
                "/root/.rustup/toolchains/nightly-x86_64-unknown-linux-gnu/lib/rustlib/src/rust/library/std/src/fs.rs".into(),
            ),
            ("std::fs::File::open", "library/std/src/fs.rs".into()),
        ] {
            assert!(is_library_frame(&rust(func, &file)), "{func} at {file}");
        }
        // Without line information, by the symbol.
        for func in [
            "std::fs::OpenOptions::_open",
            "<std::fs::OpenOptions>::_open",
            "<&dyn core::ops::function::Fn<(), Output = i32> as core::ops::function::FnOnce<()>>::call_once",
            "<alloc::boxed::Box<dyn FnOnce()>>::call_once",
        ] {
            assert!(
                is_library_frame(&frame(Some(func), None, "/tmp/x")),
                "{func}"
            );
        }
    }

    #[test]
    fn rust_user_code_and_dependencies_are_not_library() {
        for (func, file) in [
            (
                "rustleak::leak_file",
                "/work/fdtrace/tests/programs/rustleak.rs",
            ),
            (
                "rustleak::main::{closure#0}",
                "/work/fdtrace/tests/programs/rustleak.rs",
            ),
            ("<myapp::Store>::open", "/home/u/myapp/src/store.rs"),
            // A crate of the program's own named `library`.
            ("library::load", "library/src/lib.rs"),
            (
                "tokio::fs::File::open",
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.40.0/src/fs/file.rs",
            ),
        ] {
            assert!(!is_library_frame(&rust(func, file)), "{func} at {file}");
        }
        // The inlined std frame inside the user's function is library; the user's is not.
        let frames = [
            frame(
                Some("__libc_open64"),
                Some("./io/../sysdeps/unix/sysv/linux/open64.c"),
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
            ),
            rust(
                "std::fs::File::create",
                &format!("{RUSTC}/library/std/src/fs.rs"),
            ),
            rust("rustleak::leak_file", "/w/rustleak.rs"),
        ];
        assert_eq!(user_frame(&frames), Some(2));
    }

    #[test]
    fn system_libraries_and_unknown_frames() {
        let libc = frame(
            Some("__libc_open64"),
            Some("./io/../sysdeps/unix/sysv/linux/open64.c"),
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        );
        assert!(is_library_frame(&libc));
        assert!(is_library_frame(&frame(None, None, "/tmp/prog")));
        // A program installed under /usr/lib is not a library.
        let postgres = frame(
            Some("BasicOpenFile"),
            Some("fd.c"),
            "/usr/lib/postgresql/15/bin/postgres",
        );
        assert!(!is_library_frame(&postgres));
        // C functions split by the compiler keep their name's program.
        let c = frame(Some("save_image.part.0"), Some("/w/imgsrv.c"), "/w/imgsrv");
        assert!(!is_library_frame(&c));
        let c = frame(Some("sort.part.0"), Some("/w/sort.c"), "/w/sorter");
        assert!(!is_library_frame(&c));
    }
}
