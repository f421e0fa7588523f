//! A small certificate authority, for `ferry dev --secure` and tests: a CA
//! and certificates it signs, as PEM text. Production clusters bring their
//! own PKI.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("subject {0:?}: expected ATTR=value pairs separated by commas (CN, OU, O, L, ST, C)")]
    Subject(String),
}

/// A key and its certificate, in PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Leaf {
    /// The key followed by the certificate: what `ssl.keystore.location`
    /// reads for `ssl.keystore.type=PEM`.
    pub fn keystore_pem(&self, ca_pem: &str) -> String {
        format!("{}{}{}", self.key_pem, self.cert_pem, ca_pem)
    }
}

/// A certificate authority that signs leaf certificates.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's own certificate: what peers trust.
    pub cert_pem: String,
}

/// `CN=alice,OU=eng,O=Example` (most specific first, as RFC 2253 prints
/// it) as a distinguished name, which lists the most general first.
fn subject(text: &str) -> Result<DistinguishedName, PkiError> {
    let mut dn = DistinguishedName::new();
    let mut parts = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (attr, value) = part
            .split_once('=')
            .ok_or_else(|| PkiError::Subject(text.to_owned()))?;
        let ty = match attr.trim().to_ascii_uppercase().as_str() {
            "CN" => DnType::CommonName,
            "OU" => DnType::OrganizationalUnitName,
            "O" => DnType::OrganizationName,
            "L" => DnType::LocalityName,
            "ST" => DnType::StateOrProvinceName,
            "C" => DnType::CountryName,
            _ => return Err(PkiError::Subject(text.to_owned())),
        };
        parts.push((ty, value.trim().to_owned()));
    }
    if parts.is_empty() {
        return Err(PkiError::Subject(text.to_owned()));
    }
    for (ty, value) in parts.into_iter().rev() {
        dn.push(ty, value);
    }
    Ok(dn)
}

impl DevCa {
    /// A new CA named `name` (its common name).
    pub fn new(name: &str) -> Result<DevCa, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name = subject(&format!("CN={name}"))?;
        let cert = params.self_signed(&key)?;
        Ok(DevCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A certificate for `subject` (`CN=...,OU=...,O=...`), valid for the
    /// host names and IP addresses in `hosts` (as a server) and as a
    /// client.
    pub fn leaf(&self, subject_text: &str, hosts: &[&str]) -> Result<Leaf, PkiError> {
        self.leaf_valid(subject_text, hosts, None)
    }

    /// [`DevCa::leaf`], with its validity ending at `not_after` (seconds
    /// since the epoch) when given: an expired certificate for tests.
    pub fn leaf_valid(
        &self,
        subject_text: &str,
        hosts: &[&str],
        not_after_unix: Option<i64>,
    ) -> Result<Leaf, PkiError> {
        let key = KeyPair::generate()?;
        let sans: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = subject(subject_text)?;
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if let Some(t) = not_after_unix {
            let end =
                rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(t.max(0) as u64);
            params.not_before = end - std::time::Duration::from_secs(86_400);
            params.not_after = end;
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_names_its_subject_most_specific_first() {
        let ca = DevCa::new("test CA").unwrap();
        let leaf = ca
            .leaf("CN=alice,OU=eng,O=Ferry", &["127.0.0.1", "localhost"])
            .unwrap();
        use rustls::pki_types::pem::PemObject;
        let der =
            rustls::pki_types::CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
        assert_eq!(
            crate::security::tls::subject_of(&der).as_deref(),
            Some("CN=alice,OU=eng,O=Ferry")
        );
        assert!(subject("X=1").is_err());
    }
}
