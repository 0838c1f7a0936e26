//! A stand-in for the kernel's BTF when loading trampoline programs. aya finds the function a
//! program attaches to by name in a parsed `aya::Btf`, and a full parse of the kernel's BTF
//! held ~60 MiB at its peak (and took seconds under emulation). fdtrace's own reader
//! (`KernelTypes`) finds the ids of the few functions it hooks; this builds BTF in which those
//! functions sit at the same ids, every other id a one-word placeholder, for aya to look up.
use std::collections::BTreeMap;

use anyhow::{Context as _, Result};

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_PTR: u32 = 2;
const KIND_FUNC: u32 = 12;
/// `BTF_FUNC_GLOBAL`, in a function's vlen.
const LINKAGE_GLOBAL: u32 = 1;

/// BTF holding the functions of `ids` (name → the kernel's type id, and its prototype's) at
/// their ids.
pub(crate) fn stand_in(ids: &BTreeMap<String, (u32, u32)>) -> Result<aya::Btf> {
    let by_id: BTreeMap<u32, &str> = ids.iter().map(|(n, &(id, _))| (id, n.as_str())).collect();
    let last = by_id.keys().next_back().copied().unwrap_or(0);
    let mut strings = vec![0u8];
    let mut types = Vec::with_capacity(last as usize * 12);
    let word = |v: u32, types: &mut Vec<u8>| types.extend_from_slice(&v.to_le_bytes());
    for id in 1..=last {
        match by_id.get(&id) {
            Some(name) => {
                word(strings.len() as u32, &mut types);
                strings.extend_from_slice(name.as_bytes());
                strings.push(0);
                word(KIND_FUNC << 24 | LINKAGE_GLOBAL, &mut types);
                word(0, &mut types);
            }
            None => {
                word(0, &mut types);
                word(KIND_PTR << 24, &mut types);
                word(0, &mut types);
            }
        }
    }
    let mut data = Vec::with_capacity(24 + types.len() + strings.len());
    data.extend_from_slice(&BTF_MAGIC.to_le_bytes());
    data.extend_from_slice(&[1, 0]); // version, flags
    for v in [
        24,                   // header length
        0,                    // type section offset
        types.len() as u32,   // type section length
        types.len() as u32,   // string section offset
        strings.len() as u32, // string section length
    ] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    data.extend_from_slice(&types);
    data.extend_from_slice(&strings);
    aya::Btf::parse(&data, aya::Endianness::Little).context("building BTF for the trampolines")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_kernels_functions_have_the_ids_a_full_parse_gives() {
        let names = [
            "__x64_sys_openat",
            "__x64_sys_close",
            "__x64_sys_clone3",
            "no_such_fn",
        ];
        let types = crate::kernel_layout::KernelTypes::load().unwrap();
        let ids = types.function_ids(names);
        assert_eq!(ids.len(), 3, "{ids:?}");
        let full = aya::Btf::from_sys_fs().unwrap();
        let ours = stand_in(&ids).unwrap();
        for (name, id) in &ids {
            let kind = aya_obj::btf::BtfKind::Func;
            assert_eq!(full.id_by_type_name_kind(name, kind).unwrap(), id.0);
            assert_eq!(ours.id_by_type_name_kind(name, kind).unwrap(), id.0);
        }
    }

    #[test]
    fn functions_keep_their_ids() {
        let ids: BTreeMap<String, (u32, u32)> =
            [("__x64_sys_close", (7, 1)), ("__x64_sys_openat", (3, 1))]
                .into_iter()
                .map(|(n, i)| (n.to_string(), i))
                .collect();
        let btf = stand_in(&ids).unwrap();
        for (name, id) in &ids {
            assert_eq!(
                btf.id_by_type_name_kind(name, aya_obj::btf::BtfKind::Func)
                    .unwrap(),
                id.0
            );
        }
    }
}
