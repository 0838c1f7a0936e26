//! Another process's memory, read through `/proc/PID/mem` (what a language runtime keeps of its
//! frames: CPython's code objects, the JVM's methods).
use std::os::unix::fs::FileExt as _;

pub struct Memory {
    file: std::fs::File,
}

impl Memory {
    pub fn of(pid: u32) -> Option<Memory> {
        Some(Memory {
            file: std::fs::File::open(format!("/proc/{pid}/mem")).ok()?,
        })
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        addr != 0 && self.file.read_exact_at(buf, addr).is_ok()
    }

    /// Has the process's address space gone (it exited)? Its memory file then reads as empty
    /// at every address, where a live process's unmapped address is an error.
    pub fn gone(&self) -> bool {
        matches!(self.file.read_at(&mut [0u8; 1], 0x1000), Ok(0))
    }

    pub fn bytes(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let mut b = vec![0u8; len];
        self.read(addr, &mut b).then_some(b)
    }

    pub fn u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }

    pub fn u32(&self, addr: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b).then(|| u32::from_le_bytes(b))
    }

    pub fn u16(&self, addr: u64) -> Option<u16> {
        let mut b = [0u8; 2];
        self.read(addr, &mut b).then(|| u16::from_le_bytes(b))
    }

    /// A NUL-terminated string of at most `max` bytes.
    pub fn c_str(&self, addr: u64, max: usize) -> Option<String> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 64];
        while out.len() < max {
            // A string near the end of a mapping: read what is there, byte by byte.
            let n = if self.read(addr + out.len() as u64, &mut chunk) {
                chunk.len()
            } else if self.read(addr + out.len() as u64, &mut chunk[..1]) {
                1
            } else {
                return None;
            };
            if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..end]);
                return String::from_utf8(out).ok();
            }
            out.extend_from_slice(&chunk[..n]);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::Memory;

    #[test]
    fn an_exited_process_reads_as_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mem = Memory::of(child.id()).expect("our own child's memory");
        assert!(!mem.gone(), "a running process");
        assert_eq!(mem.u64(0x1000), None, "an unmapped address");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(mem.gone(), "after it exited");
    }
}
