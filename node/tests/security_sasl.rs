//! SASL with real clients (confluent-kafka and kafka-python): PLAIN,
//! SCRAM-SHA-256 and SCRAM-SHA-512 over SASL_SSL and SASL_PLAINTEXT,
//! credentials managed through the admin APIs (KIP-554), refusals counted,
//! re-authentication (KIP-368); and, with raw requests, what a connection
//! may do before it authenticates and after its session ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use ferry_node::cluster::Doc;
use ferry_node::config::SaslMechanism;
use ferry_node::security::pki::DevCa;
use ferry_node::security::scram::ScramCredential;
use ferry_node::security::SecurityDoc;
use ferry_protocol::messages::*;
use ferry_protocol::wire::Message;
use std::io::Read;
use std::time::Duration;

#[test]
fn clients_authenticate_with_plain_and_scram() {
    let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("Ferry test CA").unwrap();
    let leaf = ca.leaf("CN=node-1", &["127.0.0.1"]).unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    let keystore = dir.path().join("node.pem");
    std::fs::write(&keystore, leaf.keystore_pem("")).unwrap();
    let n = common::node_from_pairs(&[
        (
            "listeners",
            "SASL_SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,PLAINTEXT://127.0.0.1:0",
        ),
        ("inter.broker.listener.name", "PLAINTEXT"),
        (
            "sasl.enabled.mechanisms",
            "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        ),
        (
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms",
            "SCRAM-SHA-512",
        ),
        ("ssl.keystore.location", keystore.to_str().unwrap()),
        ("connections.max.reauth.ms", "3000"),
    ]);
    common::python(
        "sasl_clients.py",
        &[
            &format!("sasl_ssl={}", common::listener_addr(&n, "SASL_SSL")),
            &format!(
                "sasl_plaintext={}",
                common::listener_addr(&n, "SASL_PLAINTEXT")
            ),
            &format!("plaintext={}", common::listener_addr(&n, "PLAINTEXT")),
            &format!("ca={}", ca_path.display()),
        ],
        400,
    );
    // The refusals were counted by listener and mechanism.
    let m = &n.ctx.metrics;
    assert!(m.auth_failures("SASL_SSL", "SCRAM-SHA-256") >= 1);
    assert!(m.auth_failures("SASL_SSL", "PLAIN") >= 1);
    assert!(
        m.auth_failures("SASL_SSL", "SCRAM-SHA-512") >= 2,
        "unknown and deleted users"
    );
    // The producer renewed its sessions on its connections (10 s of 3 s
    // sessions), rather than being cut off.
    let renewed = m
        .reauthentications
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(renewed >= 2, "{renewed} re-authentications");
    // Credentials are stored salted: the document never holds a password.
    let (_, doc) = n.ctx.cluster.doc(Doc::Security);
    let text = String::from_utf8(doc.unwrap().to_vec()).unwrap();
    assert!(
        text.contains("alice") && !text.contains("alice-secret"),
        "{text}"
    );
    n.stop();
}

fn closed(k: &mut std::net::TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(k.read(&mut b), Ok(0) | Err(_))
}

/// Before authenticating, a connection on a SASL listener gets ApiVersions
/// and nothing else (any other request closes it); a wrong password is
/// answered SASL_AUTHENTICATION_FAILED and closes it; an authenticated
/// session ends after `connections.max.reauth.ms`, and the next request
/// closes the connection. On the PLAINTEXT listener, SASL requests are
/// answered ILLEGAL_SASL_STATE and the connection serves on.
#[test]
fn a_connection_is_served_only_while_authenticated() {
    let n = common::node_from_pairs(&[
        (
            "listeners",
            "SASL_PLAINTEXT://127.0.0.1:0,PLAINTEXT://127.0.0.1:0",
        ),
        ("inter.broker.listener.name", "PLAINTEXT"),
        ("sasl.enabled.mechanisms", "PLAIN"),
        ("connections.max.reauth.ms", "1500"),
    ]);
    let mut doc = SecurityDoc::default();
    doc.upsert(
        "alice",
        ScramCredential::from_password(SaslMechanism::ScramSha256, "pw", None, 4096).unwrap(),
    );
    doc.upsert(
        "bob",
        ScramCredential::from_password(SaslMechanism::ScramSha512, "bob-pw", None, 4096).unwrap(),
    );
    common::store_security_doc(&n, &doc);
    let sasl = common::listener_addr(&n, "SASL_PLAINTEXT").to_string();
    let connect = |a: &str| {
        let k = std::net::TcpStream::connect(a).unwrap();
        k.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        k
    };

    // ApiVersions is served before authentication; Metadata closes.
    let mut k = connect(&sasl);
    let r = common::raw::call(&mut k, 3, RequestBody::ApiVersions(Default::default()));
    assert_eq!(
        api_versions_response::ApiVersionsResponse::decode(&r, 3)
            .unwrap()
            .error_code,
        0
    );
    common::raw::send_only(&mut k, 12, RequestBody::Metadata(Default::default()));
    assert!(
        closed(&mut k),
        "a request before authentication closes the connection"
    );

    // A wrong password: SASL_AUTHENTICATION_FAILED, then closed.
    let mut k = connect(&sasl);
    assert_eq!(common::raw::plain_login(&mut k, "alice", "wrong").0, 58);
    assert!(closed(&mut k));
    assert_eq!(n.ctx.metrics.auth_failures("SASL_PLAINTEXT", "PLAIN"), 1);

    // The right one: served, with the session's lifetime, until it ends.
    let mut k = connect(&sasl);
    assert_eq!(common::raw::plain_login(&mut k, "alice", "pw"), (0, 1500));
    let r = common::raw::call(&mut k, 12, RequestBody::Metadata(Default::default()));
    assert!(metadata_response::MetadataResponse::decode(&r, 12).is_ok());
    std::thread::sleep(Duration::from_millis(1800));
    common::raw::send_only(&mut k, 12, RequestBody::Metadata(Default::default()));
    assert!(
        closed(&mut k),
        "a request after the session ended closes the connection"
    );

    // Re-authenticating in time keeps the connection; as another user, it
    // is refused.
    let mut k = connect(&sasl);
    assert_eq!(common::raw::plain_login(&mut k, "alice", "pw").0, 0);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(common::raw::plain_login(&mut k, "alice", "pw").0, 0);
    std::thread::sleep(Duration::from_millis(1000));
    let r = common::raw::call(&mut k, 12, RequestBody::Metadata(Default::default()));
    assert!(metadata_response::MetadataResponse::decode(&r, 12).is_ok());
    assert_eq!(
        n.ctx
            .metrics
            .reauthentications
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        common::raw::plain_login(&mut k, "bob", "bob-pw").0,
        58,
        "not the same principal"
    );
    assert!(closed(&mut k));

    // On the PLAINTEXT listener SASL is refused, and the connection lives.
    let mut k = connect(&common::listener_addr(&n, "PLAINTEXT").to_string());
    let body = RequestBody::SaslHandshake(sasl_handshake_request::SaslHandshakeRequest {
        mechanism: "PLAIN".into(),
        ..Default::default()
    });
    let r = common::raw::call(&mut k, 1, body);
    let h = sasl_handshake_response::SaslHandshakeResponse::decode(&r, 1).unwrap();
    assert_eq!(h.error_code, 34, "ILLEGAL_SASL_STATE");
    let r = common::raw::call(&mut k, 12, RequestBody::Metadata(Default::default()));
    assert!(metadata_response::MetadataResponse::decode(&r, 12).is_ok());
    n.stop();
}

/// Runs kcat with `args`, feeding it `input`; returns its stdout, or its
/// stderr as the error.
fn kcat(args: &[&str], input: &str) -> Result<String, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    // Debian's kcat, with its own librdkafka (which has TLS): not one that
    // `cargo test --workspace` puts on LD_LIBRARY_PATH (rdkafka-sys builds
    // one without OpenSSL for ferry-bench).
    let mut child = Command::new("kcat")
        .env_remove("LD_LIBRARY_PATH")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat must be installed (scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `ferry dev --secure` prints client settings that work: kcat with the
/// printed file produces and consumes over SASL_SSL; a plaintext client is
/// refused; after a `kill -9` and a restart the same settings still work
/// (the credentials were kept in the bucket).
#[test]
fn ferry_dev_secure_works_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = common::DevNode::start(dir.path(), common::free_port(), &["--secure"]);
    let log = dir.path().join("node.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let file = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("try: kcat -F")) {
            break line.split_whitespace().nth(3).unwrap().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no settings printed: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let settings = std::fs::read_to_string(&file).unwrap();
    assert!(
        settings.contains("security.protocol=SASL_SSL"),
        "{settings}"
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains(settings.lines().nth(4).unwrap()),
        "the password printed is the one in the file"
    );
    kcat(&["-F", &file, "-P", "-t", "secure-dev"], "a\nb\nc\n").unwrap();
    let consume = || {
        kcat(
            &[
                "-F",
                &file,
                "-C",
                "-t",
                "secure-dev",
                "-e",
                "-o",
                "beginning",
            ],
            "",
        )
    };
    let got = consume().unwrap();
    assert_eq!(got.lines().collect::<Vec<_>>(), ["a", "b", "c"]);
    let plain = kcat(&["-b", &n.bootstrap(), "-L", "-m", "3"], "");
    assert!(plain.is_err(), "a plaintext client got metadata: {plain:?}");

    n.kill9_and_restart(&["--secure"]);
    // The node may still be starting its shards when the port first
    // answers: try for up to 15 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let got = loop {
        match consume() {
            Ok(got) => break got,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("{e}\n{}", std::fs::read_to_string(&log).unwrap())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    };
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        ["a", "b", "c"],
        "after a restart"
    );
}
