//! The encodings of single values (docs/FORMAT.md, "Values"): varints, zigzag integers,
//! booleans, byte strings, options, and the bounds-checked cursor that decodes them.

/// A decoding failure inside a buffer: where, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError {
    /// Byte position in the decoded buffer.
    pub pos: usize,
    pub expected: String,
    pub found: String,
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Appends `v` as an unsigned LEB128 varint (7 bits per byte, low first, high bit = more).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Zigzag: small magnitudes of either sign become small unsigned numbers.
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

pub(crate) fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(v as u8);
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

pub(crate) fn put_opt<T>(out: &mut Vec<u8>, v: &Option<T>, put: impl FnOnce(&mut Vec<u8>, &T)) {
    match v {
        None => out.push(0),
        Some(x) => {
            out.push(1);
            put(out, x);
        }
    }
}

/// A varint count, then each string.
pub(crate) fn put_strings(out: &mut Vec<u8>, v: &[String]) {
    put_varint(out, v.len() as u64);
    for x in v {
        put_str(out, x);
    }
}

/// 8 bytes: the IEEE 754 binary64 bits, little-endian.
pub(crate) fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}

pub(crate) fn put_opt_str(out: &mut Vec<u8>, v: &Option<String>) {
    put_opt(out, v, |o, s| put_str(o, s));
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A cursor over a byte slice; every read is bounds-checked.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0 }
    }

    /// A cursor at byte `pos` of `buf`.
    pub fn at(buf: &'a [u8], pos: usize) -> Self {
        Dec { buf, pos }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn err(
        &self,
        pos: usize,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> DecodeError {
        DecodeError {
            pos,
            expected: expected.into(),
            found: found.into(),
        }
    }

    fn end_err(&self, field: &str, what: &str) -> DecodeError {
        self.err(self.pos, format!("{what} ({field})"), "the end of the data")
    }

    pub fn u8(&mut self, field: &str) -> Result<u8, DecodeError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.end_err(field, "a byte"))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn bool(&mut self, field: &str) -> Result<bool, DecodeError> {
        let at = self.pos;
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.err(at, format!("0 or 1 ({field})"), format!("{b}"))),
        }
    }

    pub fn varint(&mut self, field: &str) -> Result<u64, DecodeError> {
        let at = self.pos;
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| self.end_err(field, "a varint"))?;
            self.pos += 1;
            // The 10th byte may only hold the top bit of a u64.
            if i == 9 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err(
            at,
            format!("a varint of at most 64 bits ({field})"),
            "a longer one",
        ))
    }

    pub fn f64(&mut self, field: &str) -> Result<f64, DecodeError> {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8(field)?;
        }
        Ok(f64::from_bits(u64::from_le_bytes(b)))
    }

    pub fn u16(&mut self, field: &str) -> Result<u16, DecodeError> {
        let at = self.pos;
        let v = self.varint(field)?;
        u16::try_from(v)
            .map_err(|_| self.err(at, format!("a 16-bit value ({field})"), format!("{v}")))
    }

    pub fn u32(&mut self, field: &str) -> Result<u32, DecodeError> {
        let at = self.pos;
        let v = self.varint(field)?;
        u32::try_from(v)
            .map_err(|_| self.err(at, format!("a 32-bit value ({field})"), format!("{v}")))
    }

    pub fn i64(&mut self, field: &str) -> Result<i64, DecodeError> {
        Ok(unzigzag(self.varint(field)?))
    }

    pub fn i32(&mut self, field: &str) -> Result<i32, DecodeError> {
        let at = self.pos;
        let v = self.i64(field)?;
        i32::try_from(v)
            .map_err(|_| self.err(at, format!("a 32-bit value ({field})"), format!("{v}")))
    }

    /// A length or count of items that take at least `min_item` bytes each: it must fit in
    /// what remains, which bounds every allocation by the buffer size.
    pub fn len(&mut self, field: &str, min_item: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.varint(field)?;
        let max = self.remaining() / min_item.max(1);
        if n > max as u64 {
            return Err(self.err(
                at,
                format!("a length of at most {max} ({field}, bounded by the remaining data)"),
                format!("{n}"),
            ));
        }
        Ok(n as usize)
    }

    pub fn bytes(&mut self, field: &str) -> Result<&'a [u8], DecodeError> {
        let n = self.len(field, 1)?;
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    /// A UTF-8 string, as any owned text type (`String`, `CompactString`).
    pub fn string<S: for<'s> From<&'s str>>(&mut self, field: &str) -> Result<S, DecodeError> {
        let at = self.pos;
        let b = self.bytes(field)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(S::from(s)),
            Err(e) => Err(self.err(
                at,
                format!("a UTF-8 string ({field})"),
                format!("invalid UTF-8 at byte {} of it", e.valid_up_to()),
            )),
        }
    }

    pub fn opt<T>(
        &mut self,
        field: &str,
        get: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        Ok(if self.bool(field)? {
            Some(get(self)?)
        } else {
            None
        })
    }

    pub fn strings(&mut self, field: &str) -> Result<Vec<String>, DecodeError> {
        let n = self.len(field, 1)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.string(field)?);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_edges() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert!(out.len() <= 10);
            let mut d = Dec::new(&out);
            assert_eq!(d.varint("v").unwrap(), v);
            assert!(d.is_empty());
        }
    }

    #[test]
    fn zigzag_round_trips_edges() {
        for v in [0, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }

    #[test]
    fn overlong_varint_is_an_error() {
        let bytes = [0xff; 11];
        let e = Dec::new(&bytes).varint("x").unwrap_err();
        assert_eq!(e.pos, 0);
        // Ten bytes whose last one holds more than the 64th bit.
        let mut bytes = [0xff; 10];
        bytes[9] = 0x02;
        assert!(Dec::new(&bytes).varint("x").is_err());
    }

    #[test]
    fn huge_length_is_rejected_before_allocating() {
        let mut out = Vec::new();
        put_varint(&mut out, u64::MAX / 2);
        let e = Dec::new(&out).string::<String>("s").unwrap_err();
        assert!(e.expected.contains("at most 0"), "{e:?}");
    }

    #[test]
    fn u32_overflow_is_an_error() {
        let mut out = Vec::new();
        put_varint(&mut out, u64::from(u32::MAX) + 1);
        assert!(Dec::new(&out).u32("x").is_err());
    }
}
