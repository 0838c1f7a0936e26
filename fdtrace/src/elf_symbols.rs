//! Where a named function is in an ELF file: the file offset a uprobe is attached at.
use std::path::Path;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

/// The file offsets of the functions `names` in the ELF file at `path` (from its dynamic
/// symbols, then its symbol table), in the order asked; None for each one not found. The file
/// is read only where needed (a Node.js binary is about 100 MB).
pub fn function_offsets(path: &Path, names: &[&str]) -> Vec<Option<u64>> {
    let mut found = vec![None; names.len()];
    let Ok(file) = std::fs::File::open(path) else {
        return found;
    };
    let cache = object::ReadCache::new(file);
    let Ok(obj) = object::File::parse(&cache) else {
        return found;
    };
    for sym in obj.dynamic_symbols().chain(obj.symbols()) {
        if sym.kind() != object::SymbolKind::Text || sym.is_undefined() {
            continue;
        }
        let Ok(name) = sym.name() else {
            continue;
        };
        if let Some(i) = names.iter().position(|n| *n == name)
            && found[i].is_none()
        {
            found[i] = file_offset(&obj, sym.address());
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found
}

/// The file offset of a virtual address, through the section holding it.
pub fn file_offset<'d, R: object::ReadRef<'d>>(
    obj: &object::File<'d, R>,
    addr: u64,
) -> Option<u64> {
    obj.sections().find_map(|s| {
        let (off, size) = s.file_range()?;
        (addr >= s.address() && addr < s.address() + size).then(|| addr - s.address() + off)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_of_the_c_library_are_found_at_their_offsets() {
        // This test's own executable: `main` is in its symbol table, in .text.
        let exe = std::env::current_exe().unwrap();
        let got = function_offsets(&exe, &["main", "no_such_function_anywhere"]);
        let main = got[0].expect("main");
        assert!(main > 0);
        assert_eq!(got[1], None);
        assert!(function_offsets(Path::new("/nonexistent"), &["main"])[0].is_none());
    }
}
