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
