//! The etcd client's messages and stubs (`node/src/cluster/etcd_api/generated.rs`)
//! are checked in, so that building `ferry` needs no `protoc`. This test
//! generates them again from `node/proto/etcd.proto` and fails if the file
//! is stale. Set `FERRY_REGENERATE_ETCD_API=1` to rewrite it instead.
//!
//! Needs `protoc` (Debian's protobuf-compiler; the test command installs
//! it). Without it the test fails, it does not skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

/// What the checked-in file starts with, before the generated code.
const HEADER: &str = "// @generated from node/proto/etcd.proto by tonic-prost-build (see \
node/tests/etcd_api_generated.rs). Do not edit.\n\n";

/// The text without its whitespace: rustfmt may lay the file out again.
fn squeezed(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

#[test]
fn the_checked_in_etcd_api_is_what_the_proto_generates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    tonic_prost_build::configure()
        .build_server(false)
        .out_dir(out.path())
        .compile_protos(&[root.join("proto/etcd.proto")], &[root.join("proto")])
        .expect("generate the etcd API (needs protoc: apt-get install protobuf-compiler)");
    let generated = std::fs::read_to_string(out.path().join("etcdserverpb.rs")).unwrap();
    let want = format!("{HEADER}{generated}");
    let path = root.join("src/cluster/etcd_api/generated.rs");
    if std::env::var_os("FERRY_REGENERATE_ETCD_API").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        squeezed(&have) == squeezed(&want),
        "{} is not what node/proto/etcd.proto generates; run \
         FERRY_REGENERATE_ETCD_API=1 cargo test -p ferry-node --test etcd_api_generated",
        path.display()
    );
}
