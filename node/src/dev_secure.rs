//! `ferry dev --secure` (the binary's, not the library's): a CA, the node
//! certificate and an `admin` password under `<dir>/secure`, made once and
//! kept for later runs; clients on SASL_SSL, nodes on mutual TLS.

use anyhow::Context;
use ferry_node::config::{Config, SaslMechanism};
use ferry_node::security::pki::DevCa;
use ferry_node::security::scram::ScramCredential;
use std::path::{Path, PathBuf};

/// The dev cluster's security material.
pub struct DevSecure {
    dir: PathBuf,
    password: String,
}

const ADMIN: &str = "admin";

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Makes (or finds, from an earlier run) the material under `<dir>/secure`.
pub fn prepare(dir: &Path) -> anyhow::Result<DevSecure> {
    let secure = std::path::absolute(dir.join("secure")).context("the dev directory")?;
    std::fs::create_dir_all(&secure).with_context(|| format!("creating {}", secure.display()))?;
    let ca_path = secure.join("ca.pem");
    let node_path = secure.join("node.pem");
    let password_path = secure.join("admin.password");
    if !(ca_path.exists() && node_path.exists() && password_path.exists()) {
        let ca = DevCa::new("Ferry dev CA")?;
        let node = ca.leaf("CN=ferry-node,O=Ferry dev", &["127.0.0.1", "localhost"])?;
        write_private(&node_path, &node.keystore_pem(""))?;
        std::fs::write(&ca_path, &ca.cert_pem)
            .with_context(|| format!("writing {}", ca_path.display()))?;
        let mut raw = [0u8; 18];
        aws_lc_rs::rand::fill(&mut raw).map_err(|_| anyhow::anyhow!("no random bytes"))?;
        use base64::Engine;
        let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        write_private(&password_path, &password)?;
    }
    let password = std::fs::read_to_string(&password_path)
        .with_context(|| format!("reading {}", password_path.display()))?
        .trim()
        .to_owned();
    Ok(DevSecure {
        dir: secure,
        password,
    })
}

impl DevSecure {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// Clients on SASL_SSL at `port`; node-to-node calls on an mTLS
    /// listener on a free port.
    pub fn configure(&self, c: &mut Config, port: u16) -> anyhow::Result<()> {
        let pairs = [
            (
                "listeners",
                format!("SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:0"),
            ),
            (
                "listener.security.protocol.map",
                "SASL_SSL:SASL_SSL,INTERNAL:SSL".into(),
            ),
            ("inter.broker.listener.name", "INTERNAL".into()),
            (
                "sasl.enabled.mechanisms",
                "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN".into(),
            ),
            ("ssl.keystore.type", "PEM".into()),
            ("ssl.keystore.location", self.path("node.pem")),
            ("ssl.truststore.location", self.path("ca.pem")),
            ("listener.name.internal.ssl.client.auth", "required".into()),
        ];
        c.set_all(pairs.iter().map(|(k, v)| (*k, v.as_str())))?;
        Ok(())
    }

    /// Gives `admin` its SCRAM credentials (both mechanisms) if it has none.
    pub fn seed_admin(&self, ctx: &ferry_node::node::NodeCtx) -> anyhow::Result<()> {
        let mut credentials = Vec::new();
        for m in [SaslMechanism::ScramSha512, SaslMechanism::ScramSha256] {
            credentials.push(ScramCredential::from_password(
                m,
                &self.password,
                None,
                4096,
            )?);
        }
        let seeded =
            futures_lite::future::block_on(ferry_node::broker::api::change_security(ctx, |doc| {
                if doc.scram.contains_key(ADMIN) {
                    return;
                }
                for c in &credentials {
                    doc.upsert(ADMIN, c.clone());
                }
            }));
        seeded.map_err(|(code, message)| anyhow::anyhow!("{code:?}: {message}"))
    }

    /// Prints the client settings, and writes them for `kcat -F`.
    pub fn print(&self, bootstrap: &str) {
        let settings = format!(
            "bootstrap.servers={bootstrap}\n\
             security.protocol=SASL_SSL\n\
             sasl.mechanisms=SCRAM-SHA-512\n\
             sasl.username={ADMIN}\n\
             sasl.password={}\n\
             ssl.ca.location={}\n",
            self.password,
            self.path("ca.pem")
        );
        let file = self.path("client.properties");
        if let Err(e) = write_private(Path::new(&file), &settings) {
            eprintln!("cannot write {file}: {e}");
        }
        println!(
            "  secure: clients use SASL_SSL (SCRAM-SHA-512); nodes call each other over mutual TLS"
        );
        println!("  client settings (librdkafka names), also in {file}:");
        for line in settings.lines() {
            println!("    {line}");
        }
        println!(
            "  Java clients: ssl.truststore.type=PEM, ssl.truststore.location={}, sasl.mechanism=SCRAM-SHA-512",
            self.path("ca.pem")
        );
        println!("  try: kcat -F {file} -L");
    }
}
