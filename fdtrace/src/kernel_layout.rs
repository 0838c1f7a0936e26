//! Offsets of the kernel structures the eBPF side walks (task → files → fdtable → file →
//! socket → sock), read from the running kernel's BTF so one eBPF object fits every kernel.
//!
//! Only struct and union members are needed, so this reads the BTF type section directly: one
//! pass records where each type starts, and lookups decode the few types they touch. (A
//! general BTF library held ~60 MiB at its peak for the 6 MiB vmlinux BTF.)
use anyhow::{Context as _, Result, anyhow, bail};
use fdtrace_common::{KernelLayout, NO_OFFSET, file_refs};

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
const BTF_MAGIC: u16 = 0xeb9f;
/// x86_64 kernel stack size without KASAN (PAGE_SIZE << 2).
const THREAD_SIZE: u32 = 16 * 1024;

// BTF kinds (include/uapi/linux/btf.h).
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// The kernel's type information.
pub struct KernelTypes {
    data: Vec<u8>,
    /// Start of the type section and of the string section, in `data`.
    types: usize,
    strings: usize,
    strings_len: usize,
    /// Byte offset in `data` of each type id (id 0 is void).
    offsets: Vec<usize>,
}

struct TypeRef {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// Size, or the referenced type id.
    size_or_type: u32,
    /// Where the kind-specific data starts.
    extra: usize,
}

impl KernelTypes {
    pub fn load() -> Result<Self> {
        Self::from_bytes(
            std::fs::read(VMLINUX_BTF).with_context(|| format!("reading {VMLINUX_BTF}"))?,
        )
    }

    pub fn from_bytes(data: Vec<u8>) -> Result<Self> {
        let u32_at = |o: usize| -> Result<u32> {
            data.get(o..o + 4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
                .ok_or_else(|| anyhow!("BTF data ends at {o}"))
        };
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != BTF_MAGIC {
            bail!("not BTF data (no magic 0xeb9f)");
        }
        let hdr_len = u32_at(4)? as usize;
        let type_off = u32_at(8)? as usize;
        let type_len = u32_at(12)? as usize;
        let str_off = u32_at(16)? as usize;
        let str_len = u32_at(20)? as usize;
        let types = hdr_len + type_off;
        let strings = hdr_len + str_off;
        if types + type_len > data.len() || strings + str_len > data.len() {
            bail!("BTF sections run past the end of the data");
        }
        let mut offsets = vec![0usize];
        let mut o = types;
        while o < types + type_len {
            offsets.push(o);
            let info = u32_at(o + 4)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            o += 12
                + match kind {
                    KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                    KIND_ARRAY => 12,
                    KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                    KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                    _ => 0,
                };
        }
        Ok(Self {
            data,
            types,
            strings,
            strings_len: str_len,
            offsets,
        })
    }

    fn u32_at(&self, o: usize) -> u32 {
        self.data
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .unwrap_or(0)
    }

    fn name(&self, off: u32) -> &[u8] {
        let start = self.strings + off as usize;
        let end = self.strings + self.strings_len;
        let s = self.data.get(start..end).unwrap_or_default();
        &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]
    }

    fn ty(&self, id: u32) -> Option<TypeRef> {
        let o = *self.offsets.get(id as usize)?;
        if id == 0 || o < self.types {
            return None;
        }
        let info = self.u32_at(o + 4);
        Some(TypeRef {
            name_off: self.u32_at(o),
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 != 0,
            size_or_type: self.u32_at(o + 8),
            extra: o + 12,
        })
    }

    /// Follow typedefs and qualifiers to the type itself.
    fn resolve(&self, mut id: u32) -> Option<(u32, TypeRef)> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Some((id, t)),
            }
        }
        None
    }

    /// The type ids of the functions named (those the kernel has), with the type ids of their
    /// prototypes, in one pass.
    pub fn function_ids<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> std::collections::BTreeMap<String, (u32, u32)> {
        let wanted: std::collections::HashSet<&[u8]> =
            names.into_iter().map(str::as_bytes).collect();
        (1..self.offsets.len() as u32)
            .filter_map(|id| {
                let t = self.ty(id)?;
                let name = self.name(t.name_off);
                (t.kind == KIND_FUNC && wanted.contains(name)).then(|| {
                    (
                        String::from_utf8_lossy(name).into_owned(),
                        (id, t.size_or_type),
                    )
                })
            })
            .collect()
    }

    /// Type id of `struct name`.
    fn struct_id(&self, name: &str) -> Result<u32> {
        (1..self.offsets.len() as u32)
            .find(|&id| {
                self.ty(id).is_some_and(|t| {
                    t.kind == KIND_STRUCT && t.vlen > 0 && self.name(t.name_off) == name.as_bytes()
                })
            })
            .ok_or_else(|| anyhow!("struct {name} not found in the kernel's BTF"))
    }

    /// Size in bytes of `struct name`.
    pub fn size_of(&self, name: &str) -> Result<u32> {
        let id = self.struct_id(name)?;
        Ok(self.ty(id).map(|t| t.size_or_type).unwrap_or(0))
    }

    /// Bit offset of member `name` in struct/union `id`, looking into anonymous members.
    /// Returns (bit offset, member type, is a bit field).
    fn member(&self, id: u32, name: &str, depth: u32) -> Option<(u64, u32, bool)> {
        let (_, t) = self.resolve(id)?;
        if (t.kind != KIND_STRUCT && t.kind != KIND_UNION) || depth > 8 {
            return None;
        }
        for i in 0..t.vlen {
            let m = t.extra + 12 * i;
            let (m_name, m_type, m_off) = (self.u32_at(m), self.u32_at(m + 4), self.u32_at(m + 8));
            let (bit_off, bitfield) = if t.kind_flag {
                ((m_off & 0xff_ffff) as u64, m_off >> 24 != 0)
            } else {
                (m_off as u64, false)
            };
            if m_name == 0 {
                if let Some((inner, ty, bf)) = self.member(m_type, name, depth + 1) {
                    return Some((bit_off + inner, ty, bf));
                }
            } else if self.name(m_name) == name.as_bytes() {
                return Some((bit_off, m_type, bitfield));
            }
        }
        None
    }

    /// Byte offset of `path` (members separated by dots) in `struct name`.
    pub fn offset(&self, name: &str, path: &str) -> Result<u32> {
        let mut id = self.struct_id(name)?;
        let mut bits = 0u64;
        let mut bitfield = false;
        for part in path.split('.') {
            let (off, ty, bf) = self
                .member(id, part, 0)
                .ok_or_else(|| anyhow!("{name}.{path} not found in the kernel's BTF"))?;
            bits += off;
            id = ty;
            bitfield = bf;
        }
        if bitfield || !bits.is_multiple_of(8) {
            bail!("{name}.{path} is a bit field");
        }
        Ok((bits / 8) as u32)
    }

    /// The offsets the eBPF side needs to find a socket from a descriptor. Members that only
    /// some kernels have (IPv6, a plain `sk_type`) are marked absent instead of failing.
    pub fn layout(&self) -> Result<KernelLayout> {
        let opt = |name: &str, path: &str| self.offset(name, path).unwrap_or(NO_OFFSET);
        let mut l = KernelLayout {
            valid: 1,
            task_files: self.offset("task_struct", "files")?,
            files_fdt: self.offset("files_struct", "fdt")?,
            fdt_max_fds: self.offset("fdtable", "max_fds")?,
            fdt_fd: self.offset("fdtable", "fd")?,
            file_private_data: self.offset("file", "private_data")?,
            socket_sk: self.offset("socket", "sk")?,
            skc_family: self.offset("sock_common", "skc_family")?,
            skc_state: self.offset("sock_common", "skc_state")?,
            skc_daddr: self.offset("sock_common", "skc_daddr")?,
            skc_rcv_saddr: self.offset("sock_common", "skc_rcv_saddr")?,
            skc_dport: self.offset("sock_common", "skc_dport")?,
            skc_num: self.offset("sock_common", "skc_num")?,
            skc_v6_daddr: opt("sock_common", "skc_v6_daddr"),
            skc_v6_rcv_saddr: opt("sock_common", "skc_v6_rcv_saddr"),
            sk_type: opt("sock", "sk_type"),
            sk_protocol: opt("sock", "sk_protocol"),
            task_stack: opt("task_struct", "stack"),
            // x86_64's task_pt_regs(): the user registers sit at the top of the kernel stack,
            // THREAD_SIZE (16 KiB; 32 with KASAN, which distribution kernels leave off) above
            // task->stack, with no padding on 64-bit.
            regs_in_stack: self
                .size_of("pt_regs")
                .map(|n| THREAD_SIZE - n)
                .unwrap_or(NO_OFFSET),
            sk_socket: opt("sock", "sk_socket"),
            socket_file: opt("socket", "file"),
            file_count: NO_OFFSET,
            file_refs: file_refs::UNKNOWN,
            adjacent: 0,
        };
        if let Ok(off) = self.offset("file", "f_ref") {
            (l.file_count, l.file_refs) = (off, file_refs::REF);
        } else if let Ok(off) = self.offset("file", "f_count") {
            (l.file_count, l.file_refs) = (off, file_refs::COUNT);
        }
        l.adjacent = adjacent_groups(&l);
        Ok(l)
    }
}

/// Which groups of `l`'s members one read can take (`fdtrace_common::adjacent`).
fn adjacent_groups(l: &KernelLayout) -> u32 {
    use fdtrace_common::adjacent;
    let mut groups = 0;
    if [
        l.skc_daddr,
        l.skc_rcv_saddr,
        l.skc_dport,
        l.skc_num,
        l.skc_family,
        l.skc_state,
    ] == [0, 4, 12, 14, 16, 18]
    {
        groups |= adjacent::SOCK_HEAD;
    }
    if (l.fdt_max_fds, l.fdt_fd) == (0, 8) {
        groups |= adjacent::FDTABLE;
    }
    if l.sk_type != NO_OFFSET && l.sk_protocol == l.sk_type + 2 {
        groups |= adjacent::TYPE_PROTOCOL;
    }
    if l.sk_protocol != NO_OFFSET && l.sk_type == l.sk_protocol + 2 {
        groups |= adjacent::PROTOCOL_TYPE;
    }
    if l.skc_v6_daddr != NO_OFFSET && l.skc_v6_rcv_saddr == l.skc_v6_daddr + 16 {
        groups |= adjacent::V6_ADDRS;
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel fdtrace supports has BTF (the tool refuses to run without it), so this reads
    /// the machine's own kernel.
    #[test]
    fn layout_of_the_running_kernel() {
        let types = KernelTypes::load().expect("this kernel has BTF");
        let l = types.layout().expect("every member is found");
        // `struct sock` starts with `struct sock_common`, whose first words are the address
        // pair (inside an anonymous union); these have not moved in many years.
        assert_eq!(l.skc_daddr, 0);
        assert_eq!(l.skc_rcv_saddr, 4);
        assert!(l.skc_family > l.skc_num);
        assert!(l.fdt_fd > l.fdt_max_fds);
        // And so are the neighbours read at once.
        use fdtrace_common::adjacent;
        let types_protocols = adjacent::TYPE_PROTOCOL | adjacent::PROTOCOL_TYPE;
        assert_eq!(
            l.adjacent & !types_protocols,
            adjacent::SOCK_HEAD | adjacent::FDTABLE | adjacent::V6_ADDRS
        );
        // Side by side, one way or the other (6.18 swapped them).
        assert_eq!((l.adjacent & types_protocols).count_ones(), 1);
        let mut moved = l;
        moved.skc_state += 1;
        moved.sk_type = 100;
        moved.sk_protocol = 104;
        assert_eq!(
            adjacent_groups(&moved),
            adjacent::FDTABLE | adjacent::V6_ADDRS
        );
        assert_ne!(l.skc_v6_daddr, NO_OFFSET);
        // x86_64's struct pt_regs is 21 words.
        assert_eq!(l.regs_in_stack, THREAD_SIZE - 21 * 8);
        assert_ne!(l.task_stack, NO_OFFSET);
        // After sock_common, within struct sock.
        assert!(l.sk_socket != NO_OFFSET && l.sk_socket > l.skc_family);
        // The way from a socket to its file's reference count: `f_ref` since 6.13, `f_count`
        // before.
        assert_ne!(l.socket_file, NO_OFFSET);
        assert_ne!(l.file_count, NO_OFFSET);
        let kernel = aya::util::KernelVersion::current().unwrap();
        let want = if kernel >= aya::util::KernelVersion::new(6, 13, 0) {
            file_refs::REF
        } else {
            file_refs::COUNT
        };
        assert_eq!(l.file_refs, want, "kernel {kernel:?}");
        // A nested path adds up: sock.__sk_common.skc_family is sock_common.skc_family.
        assert_eq!(
            types.offset("sock", "__sk_common.skc_family").unwrap(),
            l.skc_family
        );
        assert!(types.offset("sock", "no_such_member").is_err());
        assert!(types.offset("no_such_struct", "x").is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(KernelTypes::from_bytes(vec![0u8; 64]).is_err());
        let mut truncated = std::fs::read(VMLINUX_BTF).unwrap();
        truncated.truncate(100);
        assert!(KernelTypes::from_bytes(truncated).is_err());
    }
}
