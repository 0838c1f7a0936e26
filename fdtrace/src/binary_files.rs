//! The bytes of the binaries traced processes map, read once and shared: every process's
//! unwinder that maps the same file (the same device and inode, size and modification time,
//! whatever path it is reached by: a container's root, another mount) holds the same copy, and
//! the copy is freed when the last one lets it go. Each unwinder reading its own copy cost about
//! 3.5 MB per process of a shell script (bash, its C library and loader), never returned while
//! the session kept the process.
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::{Arc, LazyLock, Mutex, Weak},
};

/// What tells two reads of a path apart: the file they reach, and whether it changed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct FileKey {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// A file's bytes (a `Vec` behind the `Arc`: moving a read file into an `Arc<[u8]>` would copy
/// it).
pub(crate) type Data = Arc<Vec<u8>>;

static FILES: LazyLock<Mutex<HashMap<FileKey, Weak<Vec<u8>>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The bytes of the file at `path`: the copy another unwinder already holds, or read now. None
/// when it cannot be read.
pub(crate) fn read(path: &Path) -> Option<Data> {
    let m = std::fs::metadata(path).ok()?;
    let key = FileKey {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    };
    // A panic elsewhere while holding the lock leaves the map as it was: still usable.
    let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(data) = files.get(&key).and_then(Weak::upgrade) {
        return Some(data);
    }
    let data = Arc::new(std::fs::read(path).ok()?);
    // Forget the files no unwinder holds any more, as often as a new file is read.
    files.retain(|_, w| w.strong_count() > 0);
    files.insert(key, Arc::downgrade(&data));
    Some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_once_while_held_and_again_once_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        std::fs::write(&path, b"first").unwrap();
        let a = read(&path).unwrap();
        // Another path to the same file: the same copy.
        let link = dir.path().join("link");
        std::fs::hard_link(&path, &link).unwrap();
        let b = read(&link).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.as_slice(), b"first");
        // Rewritten (another length): read anew.
        std::fs::write(&path, b"second!").unwrap();
        let c = read(&path).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.as_slice(), b"second!");
        // Let go by every holder: freed, and read again when asked.
        let weak = Arc::downgrade(&c);
        drop(c);
        assert!(weak.upgrade().is_none());
        assert_eq!(read(&path).unwrap().as_slice(), b"second!");
        assert!(read(&dir.path().join("missing")).is_none());
    }
}
