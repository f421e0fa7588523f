//! Runs the fuzz targets' corpus as an ordinary test.
//!
//! Every file in `protocol/fuzz/corpus/<target>/` goes through the function
//! the libFuzzer target of that name calls, so a crash once found by the
//! fuzzer, and saved into the corpus, stays fixed without libFuzzer or a
//! nightly toolchain. The seeds are written by `protocol/fuzz/make_seeds.py`.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The corpus files of one target, sorted, without libFuzzer's hidden
/// scratch files.
fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target);
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot list the corpus {}: {err}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| {
            entry
                .unwrap_or_else(|err| panic!("cannot list the corpus {}: {err}", dir.display()))
                .path()
        })
        .filter(|path| path.is_file())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| !name.starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// Runs every corpus file through `run`, and fails naming every file that
/// panicked.
fn run_corpus(target: &str, run: fn(&[u8])) {
    let files = corpus_files(target);
    assert!(
        !files.is_empty(),
        "the corpus of fuzz target {target} is empty: run protocol/fuzz/make_seeds.py"
    );
    let mut panicked = Vec::new();
    for path in &files {
        let data = fs::read(path)
            .unwrap_or_else(|err| panic!("cannot read corpus file {}: {err}", path.display()));
        if panic::catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            panicked.push(path.display().to_string());
        }
    }
    assert!(
        panicked.is_empty(),
        "fuzz target {target} panicked on {} of {} corpus file(s):\n{}",
        panicked.len(),
        files.len(),
        panicked.join("\n")
    );
    println!("fuzz corpus {target}: ran {} file(s)", files.len());
}

#[test]
fn decode_request_corpus() {
    run_corpus("decode_request", ferry_protocol::frame::fuzz_request);
}

#[test]
fn record_batch_corpus() {
    run_corpus("record_batch", ferry_protocol::records::fuzz_batches);
}

#[test]
fn ferry_message_corpus() {
    run_corpus("ferry_message", ferry_protocol::frame::fuzz_ferry_message);
}
