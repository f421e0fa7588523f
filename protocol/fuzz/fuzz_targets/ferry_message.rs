//! Feeds arbitrary bytes to the decoders of Ferry's own node-to-node
//! messages: the first byte picks the message, the rest is its body. Each
//! must return an error or a message that survives a round trip: never
//! panic, never allocate more than a small multiple of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferry_protocol::frame::fuzz_ferry_message(data);
});
