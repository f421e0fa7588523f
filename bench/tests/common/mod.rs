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

/// Runs `cmd` with its output captured, killing it (and failing the test
/// with its stderr) if it outlives `limit`; returns its output and how long
/// it ran.
pub fn run_bounded(
    cmd: &mut std::process::Command,
    limit: std::time::Duration,
) -> (std::process::Output, std::time::Duration) {
    use std::process::Stdio;
    let start = std::time::Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the command");
    while child.try_wait().expect("poll the command").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "{cmd:?} still running after {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let elapsed = start.elapsed();
    (child.wait_with_output().expect("collect output"), elapsed)
}
