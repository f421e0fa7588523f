//! TLS listeners with real clients: confluent-kafka (librdkafka) and
//! kafka-python over SSL and mutual TLS, each listener advertising its own
//! endpoint; untrusted certificates and plaintext clients refused while the
//! node keeps serving; certificates reloaded when their files change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use ferry_node::broker::server::{self, RunningNode};
use ferry_node::config::{Config, HostEnv};
use ferry_node::node::NodeSettings;
use ferry_node::security::pki::DevCa;
use ferry_node::storage::durable::MemoryLog;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Writes `text` to `dir/name` and returns the path as text.
fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// A node with an SSL listener, an mTLS listener (client certificates
/// required, mapped to `alice` by a RULE) and a PLAINTEXT one for
/// node-to-node calls.
fn tls_node(keystore: &str, ca: &str) -> RunningNode {
    let config = Config::from_pairs(
        [
            ("node.id", "1"),
            (
                "listeners",
                "SSL://127.0.0.1:0,MTLS://127.0.0.1:0,INTERNAL://127.0.0.1:0",
            ),
            (
                "listener.security.protocol.map",
                "SSL:SSL,MTLS:SSL,INTERNAL:PLAINTEXT",
            ),
            ("inter.broker.listener.name", "INTERNAL"),
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.location", keystore),
            ("ssl.truststore.location", ca),
            ("listener.name.mtls.ssl.client.auth", "required"),
            (
                "listener.name.mtls.ssl.principal.mapping.rules",
                "RULE:^CN=([^,]*),OU=eng.*$/$1/L,DEFAULT",
            ),
            ("s3.data.buckets", "0@file:///unused"),
        ],
        HostEnv::detect(),
    )
    .unwrap();
    assert!(config.unknown_keys.is_empty(), "{:?}", config.unknown_keys);
    server::start(
        NodeSettings {
            shards: 2,
            ..NodeSettings::from_config(&config).unwrap()
        },
        Arc::new(MemoryLog::new()),
        Default::default(),
        Default::default(),
    )
    .unwrap()
}

#[test]
fn clients_produce_and_consume_over_tls_and_mutual_tls() {
    let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("Ferry test CA").unwrap();
    let server = ca
        .leaf("CN=node-1,O=Ferry", &["127.0.0.1", "localhost"])
        .unwrap();
    let alice = ca.leaf("CN=Alice,OU=eng,O=Ferry", &[]).unwrap();
    // A certificate from a CA the node does not trust, and one the node's
    // CA signed that has expired.
    let rogue_ca = DevCa::new("Rogue CA").unwrap();
    let rogue = rogue_ca.leaf("CN=mallory,OU=eng,O=Ferry", &[]).unwrap();
    let expired = ca
        .leaf_valid("CN=old,OU=eng,O=Ferry", &[], Some(1_600_000_000))
        .unwrap();
    let ca_path = write(dir.path(), "ca.pem", &ca.cert_pem);
    let keystore = write(dir.path(), "node.pem", &server.keystore_pem(""));
    let node = tls_node(&keystore, &ca_path);
    let addr = |name: &str| common::listener_addr(&node, name).to_string();
    let files = [
        ("ca", ca_path.clone()),
        (
            "alice_cert",
            write(dir.path(), "alice.crt", &alice.cert_pem),
        ),
        ("alice_key", write(dir.path(), "alice.key", &alice.key_pem)),
        (
            "rogue_ca",
            write(dir.path(), "rogue-ca.pem", &rogue_ca.cert_pem),
        ),
        (
            "rogue_cert",
            write(dir.path(), "rogue.crt", &rogue.cert_pem),
        ),
        ("rogue_key", write(dir.path(), "rogue.key", &rogue.key_pem)),
        (
            "expired_cert",
            write(dir.path(), "expired.crt", &expired.cert_pem),
        ),
        (
            "expired_key",
            write(dir.path(), "expired.key", &expired.key_pem),
        ),
    ];
    let mut args = vec![
        format!("ssl={}", addr("SSL")),
        format!("mtls={}", addr("MTLS")),
    ];
    args.extend(files.iter().map(|(k, v)| format!("{k}={v}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::python("tls_clients.py", &args, 300);
    // The refused handshakes were counted on the mTLS listener, and the
    // plaintext client's on the SSL one.
    let m = &node.ctx.metrics;
    assert!(
        m.auth_failures("MTLS", "SSL") >= 3,
        "{}",
        m.auth_failures("MTLS", "SSL")
    );
    assert!(m.auth_failures("SSL", "SSL") >= 1);
    node.stop();
}

/// The certificate a TLS client is shown on `addr`, trusting `ca_pem`:
/// `Err` if the handshake fails.
fn handshake(addr: std::net::SocketAddr, ca_pem: &str) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    let cert = conn.peer_certificates().unwrap()[0].to_vec();
    Ok(ferry_node::security::tls::subject_of(&cert).unwrap())
}

/// Replacing the key and certificate file changes what new connections
/// are shown within a few seconds, with no restart or admin call.
#[test]
fn certificates_are_reloaded_when_their_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let first_ca = DevCa::new("first CA").unwrap();
    let second_ca = DevCa::new("second CA").unwrap();
    let both_cas = format!("{}{}", first_ca.cert_pem, second_ca.cert_pem);
    let ca_path = write(dir.path(), "ca.pem", &both_cas);
    let first = first_ca.leaf("CN=first", &["127.0.0.1"]).unwrap();
    let keystore = write(dir.path(), "node.pem", &first.keystore_pem(""));
    let node = tls_node(&keystore, &ca_path);
    let ssl = node.listeners[0].1;
    assert_eq!(handshake(ssl, &first_ca.cert_pem), Ok("CN=first".into()));
    assert!(handshake(ssl, &second_ca.cert_pem).is_err());

    // A half-written file is not taken: the old certificate stays.
    std::fs::write(dir.path().join("node.pem"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
    std::thread::sleep(ferry_node::security::tls::WATCH_PERIOD * 2);
    assert_eq!(handshake(ssl, &first_ca.cert_pem), Ok("CN=first".into()));

    let second = second_ca.leaf("CN=second", &["127.0.0.1"]).unwrap();
    // Written aside and renamed into place, as certificate tools do.
    let tmp = write(dir.path(), "node.pem.new", &second.keystore_pem(""));
    std::fs::rename(tmp, &keystore).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match handshake(ssl, &second_ca.cert_pem) {
            Ok(subject) => {
                assert_eq!(subject, "CN=second");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "not reloaded in 15 s: {e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(handshake(ssl, &first_ca.cert_pem).is_err());
    node.stop();
}

/// A key encrypted as openssl writes it (`openssl pkcs8 -topk8 -v2
/// aes-256-cbc`) is read with `ssl.key.password`; a wrong password stops
/// the start with an error that names it.
#[test]
fn an_encrypted_key_is_read_with_ssl_key_password() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("Ferry test CA").unwrap();
    let leaf = ca.leaf("CN=encrypted", &["127.0.0.1"]).unwrap();
    let plain = write(dir.path(), "plain.key", &leaf.key_pem);
    let encrypted = dir.path().join("encrypted.key");
    let status = std::process::Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:s3cret-pw",
            "-in",
        ])
        .arg(&plain)
        .arg("-out")
        .arg(&encrypted)
        .status()
        .expect("openssl must be installed (scripts/test.sh installs it)");
    assert!(status.success());
    let key_text = std::fs::read_to_string(&encrypted).unwrap();
    assert!(key_text.contains("ENCRYPTED PRIVATE KEY"));
    let keystore = write(
        dir.path(),
        "node.pem",
        &format!("{key_text}{}", leaf.cert_pem),
    );
    let config = |password: &str| {
        Config::from_pairs(
            [
                ("node.id", "1"),
                ("listeners", "SSL://127.0.0.1:0"),
                ("ssl.keystore.location", keystore.as_str()),
                ("ssl.key.password", password),
                ("s3.data.buckets", "0@file:///unused"),
            ],
            HostEnv::detect(),
        )
        .unwrap()
    };
    let wrong = NodeSettings::from_config(&config("wrong"))
        .err()
        .expect("refused");
    assert!(
        wrong
            .to_string()
            .contains("ssl.key.password does not decrypt"),
        "{wrong}"
    );
    assert!(
        !wrong.to_string().contains("wrong"),
        "the password is not shown: {wrong}"
    );
    let node = server::start(
        NodeSettings {
            shards: 1,
            ..NodeSettings::from_config(&config("s3cret-pw")).unwrap()
        },
        Arc::new(MemoryLog::new()),
        Default::default(),
        Default::default(),
    )
    .unwrap();
    assert_eq!(
        handshake(node.addr, &ca.cert_pem),
        Ok("CN=encrypted".into())
    );
    node.stop();
}
