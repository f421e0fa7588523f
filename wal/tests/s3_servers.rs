//! The WAL against real S3-protocol servers, started on free ports: moto's
//! and s3s-fs, which behave differently (s3s-fs answers a suffix range
//! longer than the object with a 500, for one).
//!
//! Needs `python3 -m pip install 'moto[server]'` and
//! `cargo install s3s-fs@0.14.1 --locked --features binary` (the test
//! command installs both). Without them these tests FAIL (they do not
//! skip): the WAL's S3 path must be tested wherever tests run.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use ferry_wal::reader::{self, object_key};
use ferry_wal::recovery;
use ferry_wal::{BucketUri, FaultyStore, WalWriter};

const MOTO_INSTALL: &str = "python3 -m pip install 'moto[server]'";
const S3S_INSTALL: &str = "cargo install s3s-fs@0.14.1 --locked --features binary";
const START_WAIT_MAX: Duration = Duration::from_secs(30);
const BUCKET: &str = "ferry-wal-test";
const ACCESS_KEY: &str = "ferrytest";
const SECRET_KEY: &str = "test-secret";

/// An S3 server process with the bucket made; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    _root: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// One HTTP/1.1 request without a body; returns the status code.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let status = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP status line"))?;
    Ok(status)
}

fn wait_ready(mut server: Server, name: &str, ready: impl Fn(u16) -> bool) -> Server {
    let port = server.port;
    let deadline = Instant::now() + START_WAIT_MAX;
    loop {
        if ready(port) {
            return server;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("{name} exited with {status} before answering on port {port}");
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not answer on port {port} within {START_WAIT_MAX:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn start_moto() -> Server {
    let probe = Command::new("python3")
        .args(["-c", "import moto.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(st) if st.success() => {}
        other => panic!(
            "moto's S3 server is not installed (python3 -c 'import moto.server': {other:?}); \
             install it with: {MOTO_INSTALL}"
        ),
    }
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start moto server ({MOTO_INSTALL}): {e}"));
    let server = wait_ready(
        Server {
            child,
            port,
            _root: None,
        },
        "moto",
        |port| matches!(http(port, "GET", "/"), Ok(200)),
    );
    assert_eq!(
        http(server.port, "PUT", &format!("/{BUCKET}")).expect("create bucket"),
        200
    );
    server
}

/// The `s3s-fs` binary: on PATH, or where `cargo install` puts it.
fn s3s_fs_binary() -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("s3s-fs"))
            .find(|p| p.is_file())
    });
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")));
    on_path
        .or_else(|| {
            cargo_home
                .map(|h| h.join("bin/s3s-fs"))
                .filter(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("s3s-fs is not installed; install it with: {S3S_INSTALL}"))
}

fn start_s3s_fs() -> Server {
    let root = tempfile::tempdir().expect("s3s-fs root");
    // s3s-fs keeps a bucket as a folder of its root.
    std::fs::create_dir(root.path().join(BUCKET)).expect("bucket folder");
    let port = free_port();
    let child = Command::new(s3s_fs_binary())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start s3s-fs ({S3S_INSTALL}): {e}"));
    // Any HTTP answer (an unsigned request is refused) means it is up.
    wait_ready(
        Server {
            child,
            port,
            _root: Some(root),
        },
        "s3s-fs",
        |port| http(port, "GET", "/").is_ok(),
    )
}

#[test]
fn wal_round_trip_through_moto() {
    wal_round_trip(&start_moto());
}

#[test]
fn wal_round_trip_through_s3s_fs() {
    wal_round_trip(&start_s3s_fs());
}

/// Appends through a WAL writer on `server`'s bucket, reads entries and
/// indexes back, and recovers every acknowledged entry.
#[allow(clippy::unwrap_used)] // a test body, shared by the two servers
fn wal_round_trip(server: &Server) {
    let uri = BucketUri::parse(&format!(
        "0@s3://{BUCKET}?region=us-east-1&endpoint=http://127.0.0.1:{}&pathStyle=true\
         &accessKey={ACCESS_KEY}&secretKey={SECRET_KEY}&batchInterval=50",
        server.port
    ))
    .unwrap();
    assert!(!format!("{uri:?} {uri}").contains("test-secret"));
    let s3 = uri.build_store_with_env(&|_| None).unwrap();
    let store = Arc::new(FaultyStore::new(s3));
    let mut cfg = config(21, uri.batch_interval);
    cfg.max_bytes_in_batch = uri.max_bytes_in_batch;
    let writer = WalWriter::start(as_store(&store), cfg).unwrap();

    // Appenders on two threads; a retried PUT on the way.
    store.fail_next_puts(1);
    let joins: Vec<_> = (0..2)
        .map(|t| {
            let h = writer.handle();
            thread::spawn(move || {
                (0..20i64)
                    .map(|i| {
                        (
                            (t, i * 10),
                            h.append(entry("s3-topic", t, i * 10, 500 + i as usize)),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut acked = Vec::new();
    for j in joins {
        for ((p, base), rx) in j.join().unwrap() {
            acked.push((
                (p, base),
                wait(writer.io(), rx).unwrap().expect("acknowledged by S3"),
            ));
        }
    }
    assert_eq!(store.put_failures(), 1);
    assert!(writer.stats().snapshot().objects_uploaded >= 1);

    // Ranged reads through the reader.
    let r = writer.reader();
    for ((p, base), loc) in &acked {
        let data = wait(writer.io(), r.read_entry(loc.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(
            data,
            payload("s3-topic", *p, *base, 500 + (*base / 10) as usize)
        );
    }
    let objects = wait(writer.io(), r.list_objects("wal", 21))
        .unwrap()
        .unwrap();
    assert!(!objects.is_empty());
    assert!(objects.windows(2).all(|w| w[0].seq < w[1].seq));
    let index = wait(
        writer.io(),
        r.read_index(object_key("wal", 21, objects[0].seq)),
    )
    .unwrap()
    .unwrap();
    let run = index.partition_entries("s3-topic", 0).to_vec();
    assert!(!run.is_empty());
    let datas = wait(
        writer.io(),
        reader::read_entries(
            &*as_store(&store),
            &object_key("wal", 21, objects[0].seq),
            &run,
        ),
    )
    .unwrap();
    assert_eq!(datas.len(), run.len());

    // Recovery from S3 finds every acknowledged entry.
    let rec = wait(writer.io(), recovery::scan(&*as_store(&store), "wal", 21)).unwrap();
    assert!(rec.skipped.is_empty(), "{:?}", rec.skipped);
    assert_eq!(rec.entries.len(), acked.len());
    assert_eq!(rec.next_seq, objects.last().unwrap().seq + 1);
    let mut found: Vec<_> = rec.entries.iter().map(|e| e.location()).collect();
    let mut want: Vec<_> = acked.into_iter().map(|(_, l)| l).collect();
    found.sort_by_key(|l| (l.seq, l.position));
    want.sort_by_key(|l| (l.seq, l.position));
    assert_eq!(found, want);
    writer.shutdown(Duration::from_secs(10)).unwrap();
}
