//! Feeds arbitrary bytes, as a `records` field, to the record batch view:
//! header fields, CRC check, record and header iteration. It must return an
//! error or values: never panic, never allocate more than the input can hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferry_protocol::records::fuzz_batches(data);
});
