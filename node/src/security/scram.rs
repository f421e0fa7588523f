//! SASL PLAIN (RFC 4616) and SCRAM-SHA-256/512 (RFC 5802, RFC 7677) as a
//! Kafka broker serves them (KIP-84), and the salted credentials they check
//! against (KIP-554).
//!
//! A client sends its messages in SaslAuthenticate requests. SCRAM goes:
//! client-first ([`parse_client_first`]), server-first ([`ScramServer::start`]),
//! client-final and server-final ([`ScramServer::finish`]). There is no
//! channel binding: the GS2 header is `n,,` or `n,a=authzid,` (`y,,` is taken
//! like `n,,`), and `p=` is refused. Kafka's `tokenauth=true` extension
//! (delegation tokens) is refused too.
//!
//! An unknown user gets a made-up salt, the same each time within a process,
//! and fails at the end like a wrong password does.
//!
//! Usernames and passwords are used as sent: no SASLprep, as in Kafka.

use crate::config::SaslMechanism;
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::OnceLock;

/// Kafka's bounds for SCRAM iterations (AlterUserScramCredentials refuses others).
pub const ITERATIONS_MIN: u32 = 4096;
/// Kafka's bounds for SCRAM iterations (AlterUserScramCredentials refuses others).
pub const ITERATIONS_MAX: u32 = 16384;

/// The length of the salt [`ScramCredential::from_password`] makes up, and of
/// the salt an unknown user is shown.
const SALT_LEN: usize = 32;
/// Random bytes in the server's part of the nonce.
const SERVER_NONCE_LEN: usize = 24;

/// Why a SASL exchange or a credential was refused. Messages never carry a
/// password, a proof or a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SaslError {
    /// A client message not as the RFC says.
    #[error("Invalid SASL message: {0}")]
    Malformed(String),
    /// The client-first message asked for `tokenauth=true` (delegation tokens).
    #[error(
        "Authentication failed: SCRAM extension tokenauth (delegation tokens) is not supported"
    )]
    UnsupportedExtension,
    /// The client asked for channel binding (`p=`), or its `c=` is not its
    /// GS2 header.
    #[error(
        "Authentication failed: channel binding is not supported or does not match the GS2 header"
    )]
    ChannelBinding,
    /// The nonce of the client-final message does not end with the combined one.
    #[error("Authentication failed: Invalid client nonce in the final client message")]
    BadNonce,
    /// The client asked to act as a user other than the one it authenticates as.
    #[error("Authentication failed: Client requested an authorization id that is different from username")]
    AuthorizationId,
    /// Wrong password or unknown user: the two are not told apart.
    #[error("Authentication failed: Invalid username or password")]
    AuthenticationFailed,
    /// A SCRAM operation was given the PLAIN mechanism.
    #[error("not a SCRAM mechanism")]
    WrongMechanism,
    /// SCRAM iterations outside [`ITERATIONS_MIN`]..=[`ITERATIONS_MAX`].
    #[error("SCRAM iterations {iterations} out of range [{ITERATIONS_MIN}, {ITERATIONS_MAX}]")]
    IterationsOutOfRange { iterations: u32 },
    /// A credential that could never authenticate anyone (empty salt or
    /// salted password).
    #[error("unacceptable SCRAM credential: {0}")]
    UnacceptableCredential(&'static str),
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

fn malformed(what: &str) -> SaslError {
    SaslError::Malformed(what.to_owned())
}

/// The hash algorithms of a SCRAM mechanism.
#[derive(Clone, Copy)]
pub(super) struct Hash {
    pub(super) digest: &'static digest::Algorithm,
    pub(super) hmac: hmac::Algorithm,
    pbkdf2: pbkdf2::Algorithm,
}

pub(super) fn hash(mechanism: SaslMechanism) -> Result<Hash, SaslError> {
    match mechanism {
        SaslMechanism::Plain => Err(SaslError::WrongMechanism),
        SaslMechanism::ScramSha256 => Ok(Hash {
            digest: &digest::SHA256,
            hmac: hmac::HMAC_SHA256,
            pbkdf2: pbkdf2::PBKDF2_HMAC_SHA256,
        }),
        SaslMechanism::ScramSha512 => Ok(Hash {
            digest: &digest::SHA512,
            hmac: hmac::HMAC_SHA512,
            pbkdf2: pbkdf2::PBKDF2_HMAC_SHA512,
        }),
    }
}

pub(super) fn check_iterations(iterations: u32) -> Result<(), SaslError> {
    if (ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
        Ok(())
    } else {
        Err(SaslError::IterationsOutOfRange { iterations })
    }
}

/// Hi(password, salt, i): PBKDF2 with the mechanism's HMAC, one hash long.
/// `None` for zero iterations.
pub(super) fn salted_password(
    hash: Hash,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> Option<Vec<u8>> {
    let iterations = NonZeroU32::new(iterations)?;
    let mut out = vec![0; hash.digest.output_len()];
    pbkdf2::derive(hash.pbkdf2, iterations, salt, password.as_bytes(), &mut out);
    Some(out)
}

/// (StoredKey, ServerKey) from SaltedPassword.
fn keys(hash: Hash, salted_password: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let key = hmac::Key::new(hash.hmac, salted_password);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(hash.digest, client_key.as_ref())
        .as_ref()
        .to_vec();
    let server_key = hmac::sign(&key, b"Server Key").as_ref().to_vec();
    (stored_key, server_key)
}

pub(super) fn random_bytes(len: usize) -> Result<Vec<u8>, SaslError> {
    let mut out = vec![0; len];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| SaslError::Random)?;
    Ok(out)
}

/// A SCRAM credential as stored: never the password.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScramCredential {
    /// `ScramSha256` or `ScramSha512`; its name in JSON.
    #[serde(with = "mechanism_name")]
    pub mechanism: SaslMechanism,
    /// Base64 in JSON.
    #[serde(with = "base64_bytes")]
    pub salt: Vec<u8>,
    pub iterations: u32,
    /// H(HMAC(SaltedPassword, "Client Key")); base64 in JSON.
    #[serde(with = "base64_bytes")]
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key"); base64 in JSON.
    #[serde(with = "base64_bytes")]
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("mechanism", &self.mechanism.name())
            .field("salt", &STANDARD.encode(&self.salt))
            .field("iterations", &self.iterations)
            .field("stored_key", &"[redacted]")
            .field("server_key", &"[redacted]")
            .finish()
    }
}

impl ScramCredential {
    /// From the salted password a KIP-554 AlterUserScramCredentials upsertion
    /// carries (SaltedPassword = Hi(password, salt, i)).
    pub fn from_salted_password(
        mechanism: SaslMechanism,
        salt: &[u8],
        iterations: u32,
        salted_password: &[u8],
    ) -> Result<ScramCredential, SaslError> {
        let hash = hash(mechanism)?;
        check_iterations(iterations)?;
        if salt.is_empty() {
            return Err(SaslError::UnacceptableCredential("empty salt"));
        }
        if salted_password.is_empty() {
            return Err(SaslError::UnacceptableCredential("empty salted password"));
        }
        let (stored_key, server_key) = keys(hash, salted_password);
        Ok(ScramCredential {
            mechanism,
            salt: salt.to_vec(),
            iterations,
            stored_key,
            server_key,
        })
    }

    /// From a password (PBKDF2-HMAC with the mechanism's hash); a random
    /// 32-byte salt if `salt` is `None`.
    pub fn from_password(
        mechanism: SaslMechanism,
        password: &str,
        salt: Option<&[u8]>,
        iterations: u32,
    ) -> Result<ScramCredential, SaslError> {
        let hash = hash(mechanism)?;
        check_iterations(iterations)?;
        let salt = match salt {
            Some([]) => return Err(SaslError::UnacceptableCredential("empty salt")),
            Some(salt) => salt.to_vec(),
            None => random_bytes(SALT_LEN)?,
        };
        let salted = salted_password(hash, password, &salt, iterations)
            .ok_or(SaslError::IterationsOutOfRange { iterations })?;
        ScramCredential::from_salted_password(mechanism, &salt, iterations, &salted)
    }

    /// Whether `password` is the one this credential was made from (for SASL
    /// PLAIN against stored SCRAM credentials); the stored key is compared in
    /// constant time.
    pub fn verify_password(&self, password: &str) -> bool {
        let Ok(hash) = hash(self.mechanism) else {
            return false;
        };
        // A credential read from storage may hold anything: do not spend
        // unbounded time on it.
        if self.salt.is_empty() || check_iterations(self.iterations).is_err() {
            return false;
        }
        let Some(salted) = salted_password(hash, password, &self.salt, self.iterations) else {
            return false;
        };
        let (stored_key, _) = keys(hash, &salted);
        verify_slices_are_equal(&stored_key, &self.stored_key).is_ok()
    }
}

/// The mechanism as its name (`SCRAM-SHA-256`) in serde.
mod mechanism_name {
    use crate::config::SaslMechanism;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mechanism: &SaslMechanism, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(mechanism.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SaslMechanism, D::Error> {
        let name = String::deserialize(d)?;
        match SaslMechanism::parse(&name) {
            Some(m @ (SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512)) => Ok(m),
            _ => Err(D::Error::custom(format!("not a SCRAM mechanism: {name:?}"))),
        }
    }
}

/// Bytes as standard base64 in serde.
mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(|e| D::Error::custom(format!("not base64: {e}")))
    }
}

fn utf8(message: &[u8]) -> Result<&str, SaslError> {
    std::str::from_utf8(message).map_err(|_| malformed("not UTF-8"))
}

/// SASL PLAIN: the message `[authzid] NUL authcid NUL passwd`. Returns
/// (username, password). An authzid that is non-empty and differs from the
/// authcid is refused, as Kafka does.
pub fn parse_plain(message: &[u8]) -> Result<(String, String), SaslError> {
    let text = utf8(message)?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(username), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "SASL/PLAIN: expected [authzid] NUL authcid NUL passwd",
        ));
    };
    if username.is_empty() {
        return Err(malformed("SASL/PLAIN: username not specified"));
    }
    if password.is_empty() {
        return Err(malformed("SASL/PLAIN: password not specified"));
    }
    if !authzid.is_empty() && authzid != username {
        return Err(SaslError::AuthorizationId);
    }
    Ok((username.to_owned(), password.to_owned()))
}

/// Decodes a saslname: `=2C` is `,` and `=3D` is `=`; other `=` escapes, an
/// empty name and NUL are refused.
fn decode_saslname(name: &str) -> Result<String, SaslError> {
    if name.is_empty() {
        return Err(malformed("SCRAM: empty name"));
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix("2C") {
            out.push(',');
            rest = r;
        } else if let Some(r) = after.strip_prefix("3D") {
            out.push('=');
            rest = r;
        } else {
            return Err(malformed("SCRAM: a name has an '=' that is not =2C or =3D"));
        }
    }
    out.push_str(rest);
    if out.contains('\0') {
        return Err(malformed("SCRAM: a name has a NUL"));
    }
    Ok(out)
}

/// Printable ASCII other than `,`: what a nonce is made of. Not empty.
fn is_printable(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// An `attr=value` extension: a name of ASCII letters and a non-empty value.
fn parse_extension(attr: &str) -> Result<(&str, &str), SaslError> {
    match attr.split_once('=') {
        Some((key, value))
            if !key.is_empty()
                && key.bytes().all(|b| b.is_ascii_alphabetic())
                && !value.is_empty() =>
        {
            Ok((key, value))
        }
        _ => Err(malformed("SCRAM: an attribute is not name=value")),
    }
}

/// The client-first message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user, saslname-decoded.
    pub username: String,
    /// The client's nonce.
    pub nonce: String,
    /// `n,,`, `y,,` or `n,a=authzid,`, as sent.
    gs2_header: String,
    /// The message without its GS2 header, as sent.
    bare: String,
}

/// Parses a SCRAM client-first message.
pub fn parse_client_first(message: &[u8]) -> Result<ClientFirst, SaslError> {
    let text = utf8(message)?;
    let (flag, rest) = text
        .split_once(',')
        .ok_or_else(|| malformed("SCRAM: no GS2 header"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(SaslError::ChannelBinding),
        _ => return Err(malformed("SCRAM: the GS2 header is not n, y or p=")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or_else(|| malformed("SCRAM: the GS2 header does not end"))?;
    let authzid = if authzid.is_empty() {
        None
    } else {
        let name = authzid
            .strip_prefix("a=")
            .ok_or_else(|| malformed("SCRAM: the GS2 header's authzid is not a="))?;
        Some(decode_saslname(name)?)
    };
    let gs2_header = &text[..text.len() - bare.len()];

    let mut attrs = bare.split(',');
    let user = attrs.next().unwrap_or_default();
    if user.starts_with("m=") {
        return Err(malformed(
            "SCRAM: mandatory extensions (m=) are not supported",
        ));
    }
    let username = decode_saslname(
        user.strip_prefix("n=")
            .ok_or_else(|| malformed("SCRAM: the client-first message has no n="))?,
    )?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or_else(|| malformed("SCRAM: the client-first message has no r="))?;
    if !is_printable(nonce) {
        return Err(malformed("SCRAM: the client nonce is not printable ASCII"));
    }
    for attr in attrs {
        let (key, value) = parse_extension(attr)?;
        if key == "tokenauth" && value.eq_ignore_ascii_case("true") {
            return Err(SaslError::UnsupportedExtension);
        }
    }
    if authzid.is_some_and(|a| a != username) {
        return Err(SaslError::AuthorizationId);
    }
    Ok(ClientFirst {
        username,
        nonce: nonce.to_owned(),
        gs2_header: gs2_header.to_owned(),
        bare: bare.to_owned(),
    })
}

/// A random key for this process, for the salts of unknown users.
fn process_key() -> Result<&'static [u8], SaslError> {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    if let Some(key) = KEY.get() {
        return Ok(key);
    }
    let key = random_bytes(32)?;
    Ok(KEY.get_or_init(|| key))
}

/// What an unknown user is shown: a salt derived from its name with a
/// per-process key (the same each time), Kafka's default iterations, and keys
/// nobody knows the password of.
fn made_up_credential(
    hash: Hash,
    mechanism: SaslMechanism,
    username: &str,
) -> Result<ScramCredential, SaslError> {
    let secret = process_key()?;
    let input = |label: &str| format!("{label}\0{}\0{username}", mechanism.name());
    let salt_key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let salt = hmac::sign(&salt_key, input("salt").as_bytes());
    let key = hmac::Key::new(hash.hmac, secret);
    Ok(ScramCredential {
        mechanism,
        salt: salt.as_ref()[..SALT_LEN].to_vec(),
        iterations: ITERATIONS_MIN,
        stored_key: hmac::sign(&key, input("stored").as_bytes())
            .as_ref()
            .to_vec(),
        server_key: hmac::sign(&key, input("server").as_bytes())
            .as_ref()
            .to_vec(),
    })
}

/// A SCRAM exchange after the server-first message.
pub struct ScramServer {
    mechanism: SaslMechanism,
    username: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    /// Client nonce and server nonce.
    nonce: String,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
    /// False for an unknown user: the exchange fails at the end.
    known: bool,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer")
            .field("mechanism", &self.mechanism.name())
            .field("username", &self.username)
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// Answers a client-first message. `credential` is the user's stored
    /// credential for this mechanism, or `None` for an unknown user: then the
    /// exchange goes on with a made-up salt and fails at the end with
    /// [`SaslError::AuthenticationFailed`]. Returns the server-first message.
    pub fn start(
        mechanism: SaslMechanism,
        first: ClientFirst,
        credential: Option<&ScramCredential>,
    ) -> Result<(ScramServer, Vec<u8>), SaslError> {
        // Letters and digits only (hex), as Kafka's own nonces are: no `,`
        // or `=` that a client's parser could trip on.
        let server_nonce: String = random_bytes(SERVER_NONCE_LEN)?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        ScramServer::start_with_nonce(mechanism, first, credential, &server_nonce)
    }

    /// [`ScramServer::start`] with a given server nonce part (for tests
    /// against RFC vectors).
    pub fn start_with_nonce(
        mechanism: SaslMechanism,
        first: ClientFirst,
        credential: Option<&ScramCredential>,
        server_nonce: &str,
    ) -> Result<(ScramServer, Vec<u8>), SaslError> {
        let hash = hash(mechanism)?;
        if !is_printable(server_nonce) {
            return Err(malformed("SCRAM: the server nonce is not printable ASCII"));
        }
        let (credential, known) = match credential {
            Some(c) if c.mechanism == mechanism => (c.clone(), true),
            _ => (made_up_credential(hash, mechanism, &first.username)?, false),
        };
        let nonce = format!("{}{server_nonce}", first.nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&credential.salt),
            credential.iterations
        );
        let message = server_first.as_bytes().to_vec();
        let server = ScramServer {
            mechanism,
            username: first.username,
            gs2_header: first.gs2_header,
            client_first_bare: first.bare,
            server_first,
            nonce,
            stored_key: credential.stored_key,
            server_key: credential.server_key,
            known,
        };
        Ok((server, message))
    }

    /// Checks the client-final message: `c=` must be the base64 of the GS2
    /// header, `r=` the combined nonce, and `p=` the proof (checked in
    /// constant time). Returns the server-final message (`v=...`) and the
    /// authenticated username.
    pub fn finish(self, client_final: &[u8]) -> Result<(Vec<u8>, String), SaslError> {
        let text = utf8(client_final)?;
        let (without_proof, proof) = text
            .rsplit_once(',')
            .and_then(|(head, last)| Some((head, last.strip_prefix("p=")?)))
            .ok_or_else(|| malformed("SCRAM: the client-final message has no proof (p=)"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or_else(|| malformed("SCRAM: the client-final message has no c="))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| malformed("SCRAM: the client-final message has no r="))?;
        for attr in attrs {
            parse_extension(attr)?;
        }
        let binding = STANDARD
            .decode(binding.as_bytes())
            .map_err(|_| malformed("SCRAM: c= is not base64"))?;
        if binding != self.gs2_header.as_bytes() {
            return Err(SaslError::ChannelBinding);
        }
        // Kafka's rule: the nonce must end with the combined one. (librdkafka
        // 2.0 sends its own nonce again in front of it; the proof covers the
        // message as sent either way.)
        if !nonce.ends_with(&self.nonce) {
            return Err(SaslError::BadNonce);
        }
        let proof = STANDARD
            .decode(proof.as_bytes())
            .map_err(|_| malformed("SCRAM: p= is not base64"))?;

        let hash = hash(self.mechanism)?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        // ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); it is
        // right when H(ClientKey) is StoredKey. Computed for unknown users too.
        let signature = hmac::sign(
            &hmac::Key::new(hash.hmac, &self.stored_key),
            auth_message.as_bytes(),
        );
        let length_ok = proof.len() == signature.as_ref().len();
        let client_key: Vec<u8> = proof
            .iter()
            .zip(signature.as_ref())
            .map(|(p, s)| p ^ s)
            .collect();
        let computed = digest::digest(hash.digest, &client_key);
        let matches = verify_slices_are_equal(computed.as_ref(), &self.stored_key).is_ok();
        if !(self.known && length_ok && matches) {
            return Err(SaslError::AuthenticationFailed);
        }
        let server_signature = hmac::sign(
            &hmac::Key::new(hash.hmac, &self.server_key),
            auth_message.as_bytes(),
        );
        let server_final = format!("v={}", STANDARD.encode(server_signature.as_ref()));
        Ok((server_final.into_bytes(), self.username))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_NONCE: &str = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

    fn rfc_credential() -> ScramCredential {
        let salt = STANDARD.decode(RFC_SALT).unwrap();
        ScramCredential::from_password(SaslMechanism::ScramSha256, "pencil", Some(&salt), 4096)
            .unwrap()
    }

    /// Starts the RFC 7677 exchange; returns the server.
    fn rfc_start() -> ScramServer {
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let credential = rfc_credential();
        let (server, _) = ScramServer::start_with_nonce(
            SaslMechanism::ScramSha256,
            first,
            Some(&credential),
            RFC_SERVER_NONCE,
        )
        .unwrap();
        server
    }

    /// The client side, computed here from the password: the client-final
    /// message and the server-final message it expects.
    fn client_final(
        mechanism: SaslMechanism,
        password: &str,
        client_first_bare: &str,
        gs2_header: &str,
        server_first: &str,
    ) -> (String, String) {
        let h = hash(mechanism).unwrap();
        let mut fields = server_first.split(',');
        let nonce = fields.next().unwrap().strip_prefix("r=").unwrap();
        let salt = STANDARD
            .decode(fields.next().unwrap().strip_prefix("s=").unwrap())
            .unwrap();
        let iterations: u32 = fields
            .next()
            .unwrap()
            .strip_prefix("i=")
            .unwrap()
            .parse()
            .unwrap();
        let mut salted = vec![0; h.digest.output_len()];
        pbkdf2::derive(
            h.pbkdf2,
            NonZeroU32::new(iterations).unwrap(),
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let key = hmac::Key::new(h.hmac, &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored_key = digest::digest(h.digest, client_key.as_ref());
        let server_key = hmac::sign(&key, b"Server Key");
        let without_proof = format!("c={},r={nonce}", STANDARD.encode(gs2_header));
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac::sign(
            &hmac::Key::new(h.hmac, stored_key.as_ref()),
            auth.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_signature = hmac::sign(
            &hmac::Key::new(h.hmac, server_key.as_ref()),
            auth.as_bytes(),
        );
        (
            format!("{without_proof},p={}", STANDARD.encode(proof)),
            format!("v={}", STANDARD.encode(server_signature.as_ref())),
        )
    }

    type Finished = Result<(Vec<u8>, String), SaslError>;

    /// A whole exchange for `user` with the client knowing `password`:
    /// (server-first, what `finish` returned, the server-final expected).
    fn exchange(
        mechanism: SaslMechanism,
        credential: Option<&ScramCredential>,
        user: &str,
        password: &str,
    ) -> (String, Finished, String) {
        let bare = format!("n={user},r=fyko+d2lbbFgONRv9qkxdawL");
        let first = parse_client_first(format!("n,,{bare}").as_bytes()).unwrap();
        let (server, server_first) = ScramServer::start(mechanism, first, credential).unwrap();
        let server_first = String::from_utf8(server_first).unwrap();
        let (last, expected) = client_final(mechanism, password, &bare, "n,,", &server_first);
        (server_first, server.finish(last.as_bytes()), expected)
    }

    #[test]
    fn rfc7677_sha256_vector() {
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(first.username, "user");
        assert_eq!(first.nonce, "rOprNGfwEbeRWgbNEkqO");
        let credential = rfc_credential();
        let (server, server_first) = ScramServer::start_with_nonce(
            SaslMechanism::ScramSha256,
            first,
            Some(&credential),
            RFC_SERVER_NONCE,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(server_first).unwrap(),
            format!("r={RFC_NONCE},s={RFC_SALT},i=4096")
        );
        let last = format!("c=biws,r={RFC_NONCE},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let (server_final, user) = server.finish(last.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(server_final).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert_eq!(user, "user");
    }

    #[test]
    fn sha512_round_trip_and_wrong_password() {
        let m = SaslMechanism::ScramSha512;
        let credential = ScramCredential::from_password(m, "s3cret", None, 8192).unwrap();
        assert_eq!(credential.salt.len(), 32);
        let (server_first, result, expected) = exchange(m, Some(&credential), "alice", "s3cret");
        assert!(server_first.ends_with(",i=8192"));
        let (server_final, user) = result.unwrap();
        assert_eq!(String::from_utf8(server_final).unwrap(), expected);
        assert_eq!(user, "alice");

        let (_, result, _) = exchange(m, Some(&credential), "alice", "s3cret!");
        assert_eq!(result, Err(SaslError::AuthenticationFailed));
    }

    #[test]
    fn unknown_user_fails_like_a_wrong_password() {
        let m = SaslMechanism::ScramSha256;
        let (first_a, result, _) = exchange(m, None, "nobody", "anything");
        assert_eq!(result, Err(SaslError::AuthenticationFailed));
        let (first_b, _, _) = exchange(m, None, "nobody", "else");
        let salt = |s: &str| s.split(',').nth(1).unwrap().to_owned();
        assert_eq!(salt(&first_a), salt(&first_b));
        assert!(first_a.ends_with(",i=4096"));
        assert_eq!(
            STANDARD
                .decode(salt(&first_a).strip_prefix("s=").unwrap())
                .unwrap()
                .len(),
            32
        );
        let (first_c, _, _) = exchange(m, None, "somebody", "else");
        assert_ne!(salt(&first_a), salt(&first_c));
        // The nonces differ from one start to the next.
        assert_ne!(first_a.split(',').next(), first_b.split(',').next());
    }

    #[test]
    fn credential_of_another_mechanism_counts_as_unknown() {
        let credential =
            ScramCredential::from_password(SaslMechanism::ScramSha256, "pw", None, 4096).unwrap();
        let (_, result, _) = exchange(SaslMechanism::ScramSha512, Some(&credential), "u", "pw");
        assert_eq!(result, Err(SaslError::AuthenticationFailed));
        let first = parse_client_first(b"n,,n=u,r=abc").unwrap();
        assert_eq!(
            ScramServer::start(SaslMechanism::Plain, first, None).err(),
            Some(SaslError::WrongMechanism)
        );
    }

    #[test]
    fn tampered_nonce_is_refused() {
        let last = format!("c=biws,r={RFC_NONCE}x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert_eq!(
            rfc_start().finish(last.as_bytes()),
            Err(SaslError::BadNonce)
        );
        let last = "c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            rfc_start().finish(last.as_bytes()),
            Err(SaslError::BadNonce)
        );
    }

    #[test]
    fn wrong_channel_binding_is_refused() {
        // base64("y,,") where the client sent n,,
        let last = format!("c=eSws,r={RFC_NONCE},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert_eq!(
            rfc_start().finish(last.as_bytes()),
            Err(SaslError::ChannelBinding)
        );
        let last = format!("c=!!,r={RFC_NONCE},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert!(matches!(
            rfc_start().finish(last.as_bytes()),
            Err(SaslError::Malformed(_))
        ));
    }

    #[test]
    fn missing_or_bad_proof_is_refused() {
        let last = format!("c=biws,r={RFC_NONCE}");
        assert!(matches!(
            rfc_start().finish(last.as_bytes()),
            Err(SaslError::Malformed(_))
        ));
        let last =
            format!("c=biws,r={RFC_NONCE},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=y");
        assert!(matches!(
            rfc_start().finish(last.as_bytes()),
            Err(SaslError::Malformed(_))
        ));
        let last = format!("c=biws,r={RFC_NONCE},p=AAAA");
        assert_eq!(
            rfc_start().finish(last.as_bytes()),
            Err(SaslError::AuthenticationFailed)
        );
        let last = format!("c=biws,r={RFC_NONCE},p=%%%");
        assert!(matches!(
            rfc_start().finish(last.as_bytes()),
            Err(SaslError::Malformed(_))
        ));
        // One bit off in the proof.
        let last = format!("c=biws,r={RFC_NONCE},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVU=");
        assert_eq!(
            rfc_start().finish(last.as_bytes()),
            Err(SaslError::AuthenticationFailed)
        );
    }

    #[test]
    fn tokenauth_is_refused() {
        assert_eq!(
            parse_client_first(b"n,,n=tokenid,r=abc,tokenauth=true"),
            Err(SaslError::UnsupportedExtension)
        );
        assert_eq!(
            parse_client_first(b"n,,n=tokenid,r=abc,tokenauth=TRUE"),
            Err(SaslError::UnsupportedExtension)
        );
        // Other extensions are ignored.
        assert!(parse_client_first(b"n,,n=u,r=abc,foo=bar").is_ok());
    }

    #[test]
    fn channel_binding_required_is_refused() {
        assert_eq!(
            parse_client_first(b"p=tls-unique,,n=user,r=abc"),
            Err(SaslError::ChannelBinding)
        );
    }

    #[test]
    fn client_first_parsing() {
        let first = parse_client_first(b"y,,n=a=2Cb=3Dc,r=xyz").unwrap();
        assert_eq!(first.username, "a,b=c");
        assert_eq!(first.gs2_header, "y,,");
        assert_eq!(first.bare, "n=a=2Cb=3Dc,r=xyz");
        let first = parse_client_first(b"n,a=user,n=user,r=xyz").unwrap();
        assert_eq!(first.gs2_header, "n,a=user,");
        assert_eq!(
            parse_client_first(b"n,a=admin,n=user,r=xyz"),
            Err(SaslError::AuthorizationId)
        );
        for bad in [
            &b""[..],
            b"n",
            b"n,",
            b"x,,n=user,r=abc",
            b"n,,n=a=2Db,r=abc",
            b"n,,n=a=,r=abc",
            b"n,,n=,r=abc",
            b"n,,r=abc",
            b"n,,n=user",
            b"n,,n=user,r=",
            b"n,,n=user,r=a b",
            b"n,,m=x,n=user,r=abc",
            b"n,,n=user,r=abc,=x",
            b"n,,n=user,r=abc,novalue",
            b"n,u=x,n=user,r=abc",
            b"n,,n=us\xffer,r=abc",
        ] {
            assert!(
                matches!(parse_client_first(bad), Err(SaslError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // `y,,` binds to its own header.
        let first = parse_client_first(b"y,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let credential = rfc_credential();
        let (server, server_first) =
            ScramServer::start(SaslMechanism::ScramSha256, first, Some(&credential)).unwrap();
        let server_first = String::from_utf8(server_first).unwrap();
        let nonce = server_first
            .split(',')
            .next()
            .unwrap()
            .strip_prefix("r=rOprNGfwEbeRWgbNEkqO")
            .unwrap();
        // Hex: letters and digits only.
        assert_eq!(nonce.len(), 2 * SERVER_NONCE_LEN);
        assert!(nonce.chars().all(|c| c.is_ascii_hexdigit()), "{nonce}");
        let (last, expected) = client_final(
            SaslMechanism::ScramSha256,
            "pencil",
            "n=user,r=rOprNGfwEbeRWgbNEkqO",
            "y,,",
            &server_first,
        );
        assert!(last.starts_with("c=eSws,"));
        let (server_final, _) = server.finish(last.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(server_final).unwrap(), expected);
    }

    #[test]
    fn plain_messages() {
        assert_eq!(
            parse_plain(b"\0alice\0pw").unwrap(),
            ("alice".to_owned(), "pw".to_owned())
        );
        assert_eq!(
            parse_plain(b"alice\0alice\0pw").unwrap(),
            ("alice".to_owned(), "pw".to_owned())
        );
        assert_eq!(
            parse_plain(b"admin\0alice\0pw"),
            Err(SaslError::AuthorizationId)
        );
        for bad in [
            &b"alice\0pw"[..],
            b"alicepw",
            b"",
            b"\0\0pw",
            b"\0alice\0",
            b"\0alice\0pw\0",
            b"\0al\xffice\0pw",
        ] {
            assert!(
                matches!(parse_plain(bad), Err(SaslError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn salted_password_credential_equals_password_credential() {
        for m in [SaslMechanism::ScramSha256, SaslMechanism::ScramSha512] {
            let h = hash(m).unwrap();
            let salt = b"some salt bytes";
            let salted = salted_password(h, "hunter2", salt, 4096).unwrap();
            assert_eq!(salted.len(), h.digest.output_len());
            assert_eq!(
                ScramCredential::from_salted_password(m, salt, 4096, &salted).unwrap(),
                ScramCredential::from_password(m, "hunter2", Some(salt), 4096).unwrap()
            );
        }
        // RFC 7677's keys.
        let credential = rfc_credential();
        let salted = salted_password(
            hash(SaslMechanism::ScramSha256).unwrap(),
            "pencil",
            &credential.salt,
            4096,
        )
        .unwrap();
        assert_eq!(
            ScramCredential::from_salted_password(
                SaslMechanism::ScramSha256,
                &credential.salt,
                4096,
                &salted
            )
            .unwrap(),
            credential
        );
        assert_eq!(
            ScramCredential::from_salted_password(SaslMechanism::Plain, b"s", 4096, b"x"),
            Err(SaslError::WrongMechanism)
        );
        assert_eq!(
            ScramCredential::from_salted_password(SaslMechanism::ScramSha256, b"", 4096, b"x"),
            Err(SaslError::UnacceptableCredential("empty salt"))
        );
        assert!(matches!(
            ScramCredential::from_salted_password(SaslMechanism::ScramSha256, b"s", 4096, b""),
            Err(SaslError::UnacceptableCredential(_))
        ));
    }

    #[test]
    fn verify_password_checks() {
        let credential =
            ScramCredential::from_password(SaslMechanism::ScramSha512, "right", None, 4096)
                .unwrap();
        assert!(credential.verify_password("right"));
        assert!(!credential.verify_password("wrong"));
        assert!(!credential.verify_password(""));
        assert!(rfc_credential().verify_password("pencil"));
        let empty =
            ScramCredential::from_password(SaslMechanism::ScramSha256, "", None, 4096).unwrap();
        assert!(empty.verify_password(""));
        assert!(!empty.verify_password("x"));
        let mut odd = credential.clone();
        odd.iterations = u32::MAX;
        assert!(!odd.verify_password("right"));
        odd.mechanism = SaslMechanism::Plain;
        assert!(!odd.verify_password("right"));
    }

    #[test]
    fn iterations_bounds() {
        let m = SaslMechanism::ScramSha256;
        for iterations in [0, 1, 4095, 16385, u32::MAX] {
            assert_eq!(
                ScramCredential::from_password(m, "pw", None, iterations),
                Err(SaslError::IterationsOutOfRange { iterations })
            );
            assert_eq!(
                ScramCredential::from_salted_password(m, b"salt", iterations, b"x"),
                Err(SaslError::IterationsOutOfRange { iterations })
            );
        }
        assert!(ScramCredential::from_password(m, "pw", None, ITERATIONS_MAX).is_ok());
        assert_eq!(
            ScramCredential::from_password(SaslMechanism::Plain, "pw", None, 4096),
            Err(SaslError::WrongMechanism)
        );
    }

    #[test]
    fn credential_json_round_trip_and_debug_redacts() {
        let credential = rfc_credential();
        let json = serde_json::to_string(&credential).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"mechanism":"SCRAM-SHA-256","salt":"{RFC_SALT}","iterations":4096,"stored_key":"{}","server_key":"{}"}}"#,
                STANDARD.encode(&credential.stored_key),
                STANDARD.encode(&credential.server_key)
            )
        );
        let back: ScramCredential = serde_json::from_str(&json).unwrap();
        assert_eq!(back, credential);
        assert!(
            serde_json::from_str::<ScramCredential>(&json.replace("SCRAM-SHA-256", "PLAIN"))
                .is_err()
        );
        assert!(
            serde_json::from_str::<ScramCredential>(&json.replace(RFC_SALT, "not base64!"))
                .is_err()
        );
        let sha512 =
            ScramCredential::from_password(SaslMechanism::ScramSha512, "pw", None, 4096).unwrap();
        let back: ScramCredential =
            serde_json::from_str(&serde_json::to_string(&sha512).unwrap()).unwrap();
        assert_eq!(back, sha512);

        let debug = format!("{credential:?}");
        assert!(debug.contains("[redacted]"));
        assert!(!debug.contains(&STANDARD.encode(&credential.stored_key)));
        assert!(!debug.contains(&STANDARD.encode(&credential.server_key)));
        assert!(!debug.contains(&format!("{:?}", credential.stored_key)));
        assert!(!debug.contains(&format!("{:?}", credential.server_key)));
        assert!(!format!("{:?}", rfc_start()).contains("stored_key"));
    }

    #[test]
    fn errors_do_not_echo_secrets() {
        let err = parse_plain(b"admin\0alice\0hunter2").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        let err = parse_plain(b"\0\0hunter2").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        let last = format!("c=biws,r={RFC_NONCE},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVU=");
        let err = rfc_start().finish(last.as_bytes()).unwrap_err();
        assert!(!err.to_string().contains("dHzbZapWIk4j"));
    }
}
