//! Any bytes given to the reader: no panic, no unbounded allocation, one-line errors.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = match fdtrace_record::Reader::new(data) {
        Ok(r) => r,
        Err(e) => {
            assert!(!e.to_string().contains('\n'));
            return;
        }
    };
    for item in reader.by_ref() {
        if let Err(e) = item {
            assert!(!e.to_string().contains('\n'));
        }
    }
    let _ = reader.tail().to_string();
});
