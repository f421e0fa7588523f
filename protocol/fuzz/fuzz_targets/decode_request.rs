//! Feeds arbitrary bytes, as the body of one request frame (without its size
//! prefix), to the request decoder. It must return an error or a message:
//! never panic, never allocate more than the frame can hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferry_protocol::frame::fuzz_request(data);
});
