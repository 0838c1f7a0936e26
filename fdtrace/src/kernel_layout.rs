//! Offsets of the kernel structures the eBPF side walks (task → files → fdtable → file →
//! socket → sock), read from the running kernel's BTF so one eBPF object fits every kernel.
use anyhow::{Context as _, Result, anyhow, bail};
use btfparse::{Offset, Readable, TypeInformation, TypeVariant};
use fdtrace_common::{KernelLayout, NO_OFFSET};

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

struct Bytes(Vec<u8>);

impl Readable for Bytes {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start
            .checked_add(buffer.len())
            .and_then(|end| self.0.get(start..end))
        {
            Some(src) => {
                buffer.copy_from_slice(src);
                Ok(())
            }
            None => Err(btfparse::Error::new(
                btfparse::ErrorKind::IOError,
                "read past the end of the BTF data",
            )),
        }
    }
}

/// The kernel's type information.
pub struct KernelTypes {
    types: TypeInformation,
}

impl KernelTypes {
    pub fn load() -> Result<Self> {
        Self::from_bytes(
            std::fs::read(VMLINUX_BTF).with_context(|| format!("reading {VMLINUX_BTF}"))?,
        )
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        let types = TypeInformation::new(&Bytes(bytes))
            .map_err(|e| anyhow!("parsing the kernel's BTF: {e:?}"))?;
        Ok(Self { types })
    }

    /// Type id of `struct name`. Names in BTF are not unique (a struct and a function may share
    /// one), so look for the struct itself when the name's last owner is something else.
    fn struct_id(&self, name: &str) -> Result<u32> {
        if let Some(id) = self.types.id_of(name)
            && matches!(self.types.from_id(id), Some(TypeVariant::Struct(_)))
        {
            return Ok(id);
        }
        self.types
            .get()
            .iter()
            .find(|(id, t)| {
                matches!(t, TypeVariant::Struct(_))
                    && self.types.name_of(**id).as_deref() == Some(name)
            })
            .map(|(id, _)| *id)
            .ok_or_else(|| anyhow!("struct {name} not found in the kernel's BTF"))
    }

    /// Byte offset of `path` (members separated by dots) in `struct name`.
    pub fn offset(&self, name: &str, path: &str) -> Result<u32> {
        let id = self.struct_id(name)?;
        match self.types.offset_of(id, path) {
            Ok((_, Offset::ByteOffset(o))) => Ok(o),
            Ok((_, Offset::BitOffsetAndSize(bits, _))) if bits % 8 == 0 => Ok(bits / 8),
            Ok((_, Offset::BitOffsetAndSize(..))) => bail!("{name}.{path} is a bit field"),
            Err(e) => bail!("{name}.{path} not found in the kernel's BTF: {e:?}"),
        }
    }

    /// The offsets the eBPF side needs to find a socket from a descriptor. Members that only
    /// some kernels have (IPv6, a plain `sk_type`) are marked absent instead of failing.
    pub fn layout(&self) -> Result<KernelLayout> {
        let opt = |name: &str, path: &str| self.offset(name, path).unwrap_or(NO_OFFSET);
        Ok(KernelLayout {
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
            _pad: 0,
        })
    }
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
        // pair; these have not moved in many years.
        assert_eq!(l.skc_daddr, 0);
        assert_eq!(l.skc_rcv_saddr, 4);
        assert!(l.skc_family > l.skc_num);
        assert!(l.fdt_fd > l.fdt_max_fds);
        assert_ne!(l.skc_v6_daddr, NO_OFFSET);
        assert!(types.offset("sock", "no_such_member").is_err());
        assert!(types.offset("no_such_struct", "x").is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(KernelTypes::from_bytes(vec![0u8; 64]).is_err());
    }
}
