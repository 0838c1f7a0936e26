//! Unwinding through code that has neither unwind information nor frame pointers, such as
//! musl's C library (Alpine images): it is built without `.eh_frame` entries and without frame
//! pointers, so the frame-pointer rule that framehop falls back to skips its caller (the
//! program's own line). In such code the return address is found by scanning the stack, as
//! Breakpad and crash reporters do: the first word above the stack pointer that points just
//! after a call instruction in mapped code.
//!
//! Only for code a binary leaves uncovered while it has call-frame information elsewhere: a
//! binary without any (Go, or C built with frame pointers and no tables) keeps the frame-pointer
//! rule.
use gimli::{BaseAddresses, CieOrFde, EhFrame, LittleEndian, UnwindSection as _};

/// How many stack words a scan reads at most (4 KiB).
const SCAN_WORDS: u64 = 512;

/// What a scan needs to know of a binary, in the process's addresses: the code its `.eh_frame`
/// describes, and where its named functions start.
#[derive(Clone, Debug, Default)]
pub struct CfiCoverage {
    /// Sorted, by start.
    ranges: Vec<(u64, u64)>,
    /// Sorted.
    functions: Vec<u64>,
}

impl CfiCoverage {
    /// The starts of the functions in the binary's symbol tables (`.symtab`, `.dynsym`).
    pub fn with_functions(mut self, obj: &object::File<'_>, bias: u64) -> Self {
        use object::{Object as _, ObjectSymbol as _};
        self.functions = obj
            .symbols()
            .chain(obj.dynamic_symbols())
            .filter(|s| s.kind() == object::SymbolKind::Text && s.address() != 0)
            .map(|s| s.address().wrapping_add(bias))
            .collect();
        self.functions.sort_unstable();
        self.functions.dedup();
        self
    }

    /// The start of the last named function at or before `pc`.
    pub fn function_at(&self, pc: u64) -> Option<u64> {
        let i = self.functions.partition_point(|&f| f <= pc);
        i.checked_sub(1).map(|i| self.functions[i])
    }

    /// From a `.eh_frame` section loaded at `eh_frame_svma`, with `.text` at `text_svma`;
    /// `bias` turns the binary's addresses into the process's.
    pub fn from_eh_frame(
        eh_frame: &[u8],
        eh_frame_svma: u64,
        text_svma: Option<u64>,
        bias: u64,
    ) -> Self {
        let section = EhFrame::new(eh_frame, LittleEndian);
        let mut bases = BaseAddresses::default().set_eh_frame(eh_frame_svma);
        if let Some(t) = text_svma {
            bases = bases.set_text(t);
        }
        let mut ranges = Vec::new();
        let mut entries = section.entries(&bases);
        while let Ok(Some(entry)) = entries.next() {
            if let CieOrFde::Fde(partial) = entry
                && let Ok(fde) = partial.parse(EhFrame::cie_from_offset)
                && fde.len() > 0
            {
                let start = fde.initial_address().wrapping_add(bias);
                ranges.push((start, start.wrapping_add(fde.len())));
            }
        }
        ranges.sort_unstable();
        Self {
            ranges,
            functions: Vec::new(),
        }
    }

    /// Does the binary describe any of its code?
    pub fn any(&self) -> bool {
        !self.ranges.is_empty()
    }

    /// Is `addr` in a function the binary describes?
    pub fn covers(&self, addr: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.0 <= addr);
        i > 0 && addr < self.ranges[i - 1].1
    }
}

/// The call instruction that ends just before a return address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `call rel32`: the target is the return address plus this.
    Direct(i32),
    /// `call r/m64`: the target is not known from the code.
    Indirect,
}

/// The call instruction the bytes before a return address end with, if any. `before` holds the
/// (up to 7) bytes that precede it: `call rel32` (E8), or `call r/m64` (FF /2, with an optional
/// REX prefix), whose length must end exactly at the return address.
pub fn call_before(before: &[u8]) -> Option<Call> {
    let n = before.len();
    if n >= 5 && before[n - 5] == 0xE8 {
        let rel = i32::from_le_bytes(before[n - 4..].try_into().ok()?);
        return Some(Call::Direct(rel));
    }
    let indirect = (2..=n).any(|len| {
        let at = n - len;
        before[at] == 0xFF && indirect_call_len(&before[at + 1..]) == Some(len)
            || len >= 3
                && (0x40..=0x4F).contains(&before[at])
                && before[at + 1] == 0xFF
                && indirect_call_len(&before[at + 2..]).map(|l| l + 1) == Some(len)
    });
    indirect.then_some(Call::Indirect)
}

/// Where the jump instruction at the start of `code` (at `at`) goes: `jmp rel32` (E9) or
/// `jmp rel8` (EB).
pub fn jump_target(code: &[u8], at: u64) -> Option<u64> {
    match code {
        [0xE9, a, b, c, d, ..] => {
            Some((at + 5).wrapping_add_signed(i32::from_le_bytes([*a, *b, *c, *d]).into()))
        }
        [0xEB, r, ..] => Some((at + 2).wrapping_add_signed((*r as i8).into())),
        _ => None,
    }
}

/// The length of `FF /2` from its ModRM byte on (the opcode counted), if it is a call.
fn indirect_call_len(rest: &[u8]) -> Option<usize> {
    let &modrm = rest.first()?;
    if (modrm >> 3) & 7 != 2 {
        return None;
    }
    let (md, rm) = (modrm >> 6, modrm & 7);
    let mut len = 2;
    if md != 3 && rm == 4 {
        // A SIB byte; with base 101 and mod 00, a 32-bit displacement follows.
        let &sib = rest.get(1)?;
        len += 1;
        if md == 0 && sib & 7 == 5 {
            len += 4;
        }
    }
    len += match (md, rm) {
        (0, 5) => 4, // RIP-relative
        (1, _) => 1,
        (2, _) => 4,
        _ => 0,
    };
    Some(len)
}

/// The first stack slot at or above `sp` that holds a return address (`is_return_address`
/// says whether a value points just after a call in mapped code): the slot and the address.
pub fn find_return_address(
    sp: u64,
    read_stack: &mut impl FnMut(u64) -> Result<u64, ()>,
    is_return_address: impl Fn(u64) -> bool,
) -> Option<(u64, u64)> {
    (0..SCAN_WORDS).find_map(|i| {
        let slot = sp.checked_add(i * 8)?;
        let value = read_stack(slot).ok()?;
        is_return_address(value).then_some((slot, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_call(b: &[u8]) -> bool {
        call_before(b).is_some()
    }

    #[test]
    fn calls_are_recognized_by_their_encodings() {
        assert_eq!(
            call_before(&[0xE8, 0xfb, 0xff, 0xff, 0xff]),
            Some(Call::Direct(-5))
        );
        assert_eq!(call_before(&[0xFF, 0xD3]), Some(Call::Indirect));
        // call rel32
        assert!(is_call(&[0x90, 0x90, 0xE8, 1, 2, 3, 4]));
        // call *%rbx (FF D3), call *%r11 (41 FF D3)
        assert!(is_call(&[0x90, 0xFF, 0xD3]));
        assert!(is_call(&[0x90, 0x41, 0xFF, 0xD3]));
        // call *0x10(%rax) (FF 50 10), call *0x1234(%rip) (FF 15 + disp32)
        assert!(is_call(&[0xFF, 0x50, 0x10]));
        assert!(is_call(&[0xFF, 0x15, 0x34, 0x12, 0, 0]));
        // call *(%rsp) (FF 14 24), call *0x8(%rsp) (FF 54 24 08)
        assert!(is_call(&[0xFF, 0x14, 0x24]));
        assert!(is_call(&[0xFF, 0x54, 0x24, 0x08]));
        // Not calls: jmp *%rax (FF E0), push (FF 30), plain bytes, an E8 at the wrong place.
        assert!(!is_call(&[0x90, 0xFF, 0xE0]));
        assert!(!is_call(&[0x90, 0xFF, 0x30]));
        assert!(!is_call(&[0x48, 0x89, 0xC7, 0x90]));
        assert!(!is_call(&[0xE8, 0, 0, 0, 0, 0x90]));
        assert!(!is_call(&[]));
    }

    #[test]
    fn jumps_are_followed() {
        // jmp 4040c0 at 4040e0: E9 db ff ff ff
        assert_eq!(
            jump_target(&[0xE9, 0xdb, 0xff, 0xff, 0xff], 0x4040e0),
            Some(0x4040c0)
        );
        assert_eq!(jump_target(&[0xEB, 0xfe], 0x1000), Some(0x1000));
        assert_eq!(jump_target(&[0x90, 0xEB, 0xfe], 0x1000), None);
    }

    #[test]
    fn coverage_is_looked_up_by_range() {
        let c = CfiCoverage {
            ranges: vec![(0x1000, 0x1100), (0x2000, 0x2010)],
            functions: vec![0x1000, 0x1800],
        };
        assert_eq!(c.function_at(0xfff), None);
        assert_eq!(c.function_at(0x1000), Some(0x1000));
        assert_eq!(c.function_at(0x17ff), Some(0x1000));
        assert_eq!(c.function_at(0x9000), Some(0x1800));
        assert!(c.any());
        assert!(c.covers(0x1000) && c.covers(0x10ff) && c.covers(0x2008));
        assert!(!c.covers(0xfff) && !c.covers(0x1100) && !c.covers(0x1800));
        assert!(!c.covers(0x2010));
        assert!(!CfiCoverage::default().any());
    }

    #[test]
    fn the_scan_takes_the_first_return_address_in_the_copy() {
        let stack = [5u64, 0x4010, 7, 0x5020];
        let sp = 0x7000;
        let mut read = |a: u64| {
            let i = (a - sp) / 8;
            stack.get(i as usize).copied().ok_or(())
        };
        let code = |v: u64| v == 0x4010 || v == 0x5020;
        assert_eq!(
            find_return_address(sp, &mut read, code),
            Some((sp + 8, 0x4010))
        );
        assert_eq!(
            find_return_address(sp + 16, &mut read, code),
            Some((sp + 24, 0x5020))
        );
        assert_eq!(find_return_address(sp, &mut read, |_| false), None);
    }
}
