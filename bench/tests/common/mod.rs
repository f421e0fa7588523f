//! What the bench's end-to-end tests share.
#![allow(dead_code)]

use std::path::PathBuf;

/// `ferry-bench`, as cargo built it for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_ferry-bench");

/// `target/debug/ferry`, beside `target/debug/ferry-bench`. Not built here:
/// `cargo test --workspace` builds it (or `cargo build -p ferry-node --bin ferry`).
pub fn ferry_binary() -> PathBuf {
    let ferry = PathBuf::from(BIN).with_file_name("ferry");
    assert!(
        ferry.is_file(),
        "{} is missing: these tests need the ferry binary. Run `cargo build -p ferry-node \
         --bin ferry` first (cargo test --workspace builds it).",
        ferry.display()
    );
    ferry
}
