//! The WAL against a real S3-protocol server: moto's, started on a free port.
//!
//! Needs `python3 -m pip install 'moto[server]'`. Without it this test FAILS
//! (it does not skip): the WAL's S3 path must be tested wherever tests run.

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

const INSTALL: &str = "python3 -m pip install 'moto[server]'";
const START_WAIT_MAX: Duration = Duration::from_secs(30);

/// The moto server process; killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
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

fn start_moto() -> Moto {
    let probe = Command::new("python3")
        .args(["-c", "import moto.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(st) if st.success() => {}
        other => panic!(
            "moto's S3 server is not installed (python3 -c 'import moto.server': {other:?}); \
             install it with: {INSTALL}"
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
        .unwrap_or_else(|e| panic!("start moto server ({INSTALL}): {e}"));
    let mut moto = Moto { child, port };
    let deadline = Instant::now() + START_WAIT_MAX;
    loop {
        if let Ok(200) = http(port, "GET", "/") {
            return moto;
        }
        if let Ok(Some(status)) = moto.child.try_wait() {
            panic!("moto server exited with {status} before answering on port {port}");
        }
        assert!(
            Instant::now() < deadline,
            "moto server did not answer on port {port} within {START_WAIT_MAX:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn wal_round_trip_through_a_real_s3_server() {
    let moto = start_moto();
    assert_eq!(
        http(moto.port, "PUT", "/ferry-wal-test").expect("create bucket"),
        200
    );

    let uri = BucketUri::parse(&format!(
        "0@s3://ferry-wal-test?region=us-east-1&endpoint=http://127.0.0.1:{}&pathStyle=true\
         &accessKey=test&secretKey=test-secret&batchInterval=50",
        moto.port
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
    drop(moto);
}
