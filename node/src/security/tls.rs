//! TLS for Kafka listeners and node-to-node calls, with rustls.
//!
//! A listener's [`TlsServer`] and the node-to-node [`TlsClient`] hold their
//! rustls configuration behind an `ArcSwap`: a connection takes the current
//! one when it starts, and [`watch`] rebuilds them when a key, certificate or
//! CA file changes (Kafka needs an AlterConfigs call for that; Ferry looks at
//! the files every [`WATCH_PERIOD`]). A file that no longer loads is logged
//! and the last good configuration stays.
//!
//! A client certificate's principal is its subject as RFC 2253 prints it
//! (`CN=alice,OU=eng,O=Example`, most specific first), mapped by
//! `ssl.principal.mapping.rules`.

use super::Principal;
use crate::config::{ClientAuth, KeyPassword, Pem, TlsSettings};
use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

/// How often [`watch`] looks at the files.
pub const WATCH_PERIOD: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: cannot read {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Material { what: &'static str, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
}

fn read_pem(pem: &Pem, what: &'static str) -> Result<Vec<u8>, TlsError> {
    match pem {
        Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
        Pem::File(path) => std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.clone(),
            source,
        }),
    }
}

fn certificates(pem: &Pem, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(pem, what)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Material {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Material {
            what,
            reason: "no PEM certificate (-----BEGIN CERTIFICATE-----) found".into(),
        });
    }
    Ok(certs)
}

/// The private key in `pem`: plain (PKCS#8, PKCS#1 or SEC1), or an
/// encrypted PKCS#8 key (`ENCRYPTED PRIVATE KEY`, PBES2 as openssl writes
/// it) decrypted with `ssl.key.password`.
fn private_key(
    pem: &Pem,
    password: Option<&KeyPassword>,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "private key";
    let bytes = read_pem(pem, what)?;
    let text = String::from_utf8_lossy(&bytes);
    const BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
    const END: &str = "-----END ENCRYPTED PRIVATE KEY-----";
    if let Some(start) = text.find(BEGIN) {
        let bad = |reason: String| TlsError::Material { what, reason };
        let end = text[start..]
            .find(END)
            .map(|e| start + e + END.len())
            .ok_or_else(|| bad("an ENCRYPTED PRIVATE KEY block without its end".into()))?;
        let password = password
            .ok_or_else(|| bad("the key is encrypted and ssl.key.password is not set".into()))?;
        let (_, doc) = pkcs8::der::Document::from_pem(&text[start..end])
            .map_err(|e| bad(format!("the encrypted key does not parse: {e}")))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| bad(format!("the encrypted key does not parse: {e}")))?;
        // A wrong password decrypts to nothing that decodes.
        let plain = info
            .decrypt(password.0.as_bytes())
            .map_err(|_| bad("ssl.key.password does not decrypt the key".into()))?;
        return Ok(PrivateKeyDer::Pkcs8(plain.as_bytes().to_vec().into()));
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Material {
        what,
        reason: format!("no PEM private key (PKCS#8, PKCS#1 or SEC1) found: {e}"),
    })
}

fn roots(pem: &Pem) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(pem, "truststore")? {
        store.add(cert).map_err(|e| TlsError::Material {
            what: "truststore",
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(store))
}

/// aws-lc-rs, with AES-128-GCM first: cheaper per byte than AES-256-GCM
/// (perf/tls.md), and the broker decrypts every produced byte.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites.sort_by_key(|s| {
        use rustls::CipherSuite::*;
        match s.suite() {
            TLS13_AES_128_GCM_SHA256 => 0,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 1,
            _ => 2,
        }
    });
    Arc::new(p)
}

/// A listener's rustls server configuration, from its settings.
pub fn server_config(s: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(&s.chain, "certificate chain")?;
    let key = private_key(&s.key, s.key_password.as_ref())?;
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match (s.client_auth, &s.truststore) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(trust)) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots(trust)?,
                provider(),
            );
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| TlsError::Verifier(e.to_string()))?,
            )
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    // The server's order of cipher suites wins (see `provider`).
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// The node-to-node client's configuration: the listener's truststore
/// verifies peers, and its key and chain are the client certificate.
pub fn client_config(s: &TlsSettings) -> Result<Arc<ClientConfig>, TlsError> {
    let trust = s.truststore.as_ref().ok_or(TlsError::Material {
        what: "truststore",
        reason: "node-to-node TLS needs ssl.truststore.location (or ssl.truststore.certificates) \
                 to verify other nodes"
            .into(),
    })?;
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(trust)?, provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier {
            inner: verifier,
            verify_host: s.verify_host,
        }));
    let chain = certificates(&s.chain, "certificate chain")?;
    let key = private_key(&s.key, s.key_password.as_ref())?;
    Ok(Arc::new(builder.with_client_auth_cert(chain, key)?))
}

/// Verifies a peer's chain with webpki; with
/// `ssl.endpoint.identification.algorithm` empty, a certificate that does
/// not name the host is still accepted (its chain is not).
#[derive(Debug)]
struct PeerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    verify_host: bool,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.verify_host => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A certificate's subject as RFC 2253 prints it, most specific first.
pub fn subject_of(cert: &[u8]) -> Option<String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(cert).ok()?;
    Some(cert.tbs_certificate.subject.to_string())
}

/// The principal a verified client certificate maps to: `None` if the
/// certificate does not parse or no mapping rule matches it.
pub fn principal_of(cert: &[u8], s: &TlsSettings) -> Option<Principal> {
    s.principal_rules
        .apply(&subject_of(cert)?)
        .map(Principal::user)
}

/// The principal this node's own certificate maps to: what other nodes see
/// it as on the node-to-node listener.
pub fn own_principal(s: &TlsSettings) -> Result<Principal, TlsError> {
    let chain = certificates(&s.chain, "certificate chain")?;
    principal_of(&chain[0], s).ok_or(TlsError::Material {
        what: "certificate chain",
        reason: "the node's own certificate maps to no principal under \
                 ssl.principal.mapping.rules"
            .into(),
    })
}

/// What the files of a TLS setting looked like when last loaded.
fn stamp(s: &TlsSettings) -> Vec<Option<(SystemTime, u64)>> {
    [Some(&s.key), Some(&s.chain), s.truststore.as_ref()]
        .into_iter()
        .flatten()
        .map(|pem| match pem {
            Pem::File(p) => std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len()))),
            Pem::Inline(_) => None,
        })
        .collect()
}

/// A TLS configuration kept current with its files.
pub struct Reloading<T> {
    name: String,
    settings: TlsSettings,
    current: ArcSwap<T>,
    build: fn(&TlsSettings) -> Result<Arc<T>, TlsError>,
    seen: parking_lot::Mutex<Vec<Option<(SystemTime, u64)>>>,
}

/// A TLS listener's configuration.
pub type TlsServer = Reloading<ServerConfig>;
/// The node-to-node client's configuration.
pub type TlsClient = Reloading<ClientConfig>;

impl<T> Reloading<T> {
    fn load(
        name: &str,
        settings: &TlsSettings,
        build: fn(&TlsSettings) -> Result<Arc<T>, TlsError>,
    ) -> Result<Arc<Self>, TlsError> {
        let seen = stamp(settings);
        let config = build(settings)?;
        Ok(Arc::new(Reloading {
            name: name.to_owned(),
            settings: settings.clone(),
            current: ArcSwap::new(config),
            build,
            seen: parking_lot::Mutex::new(seen),
        }))
    }

    pub fn current(&self) -> Arc<T> {
        self.current.load_full()
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Rebuilds the configuration if a file changed since it was loaded;
    /// `Ok(true)` if it did. On error the old configuration stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamp(&self.settings);
        let mut seen = self.seen.lock();
        if *seen == now {
            return Ok(false);
        }
        // Seen either way: a half-written file is tried again only when it
        // changes again.
        *seen = now;
        let config = (self.build)(&self.settings)?;
        self.current.store(config);
        Ok(true)
    }
}

impl TlsServer {
    /// Loads a listener's key, chain and truststore.
    pub fn load_server(listener: &str, settings: &TlsSettings) -> Result<Arc<Self>, TlsError> {
        Reloading::load(listener, settings, server_config)
    }

    pub fn acceptor(&self) -> futures_rustls::TlsAcceptor {
        futures_rustls::TlsAcceptor::from(self.current())
    }
}

impl TlsClient {
    /// The node-to-node client, with the inter-broker listener's material.
    pub fn load_client(listener: &str, settings: &TlsSettings) -> Result<Arc<Self>, TlsError> {
        Reloading::load(listener, settings, client_config)
    }

    pub fn connector(&self) -> futures_rustls::TlsConnector {
        futures_rustls::TlsConnector::from(self.current())
    }
}

/// Something [`watch`] keeps current.
pub trait Watched: Send + Sync {
    fn name(&self) -> &str;
    fn reload(&self) -> Result<bool, TlsError>;
}

impl<T: Send + Sync> Watched for Reloading<T> {
    fn name(&self) -> &str {
        &self.name
    }
    fn reload(&self) -> Result<bool, TlsError> {
        self.reload_if_changed()
    }
}

/// Starts a thread that reloads each configuration when its files change,
/// every [`WATCH_PERIOD`], until all of them are dropped.
pub fn watch(watched: Vec<Weak<dyn Watched>>) {
    if watched.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("ferry-tls-watch".into())
        .spawn(move || loop {
            std::thread::sleep(WATCH_PERIOD);
            let mut alive = 0;
            for w in &watched {
                let Some(w) = w.upgrade() else { continue };
                alive += 1;
                match w.reload() {
                    Ok(true) => tracing::info!(listener = w.name(), "TLS certificates reloaded"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(listener = w.name(), error = %e,
                        "TLS files changed but do not load; the previous ones stay in use"),
                }
            }
            if alive == 0 {
                return;
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the TLS file watcher; certificates will not reload");
    }
}
