//! The client side of SASL, for node-to-node connections on a SASL
//! inter-broker listener: SaslHandshake v1, then SaslAuthenticate v2 with
//! PLAIN (RFC 4616) or SCRAM-SHA-256/512 (RFC 5802), as a Kafka broker
//! authenticates to another.
//!
//! [`ScramClient`] makes the client's SCRAM messages and checks the
//! server's signature at the end, so a node also knows it reached a server
//! that holds the user's credential. [`login`] runs the whole exchange on a
//! freshly opened stream, before the first call.

use super::scram::{self, SaslError};
use crate::config::{SaslLogin, SaslMechanism};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::{digest, hmac};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use ferry_protocol::messages::sasl_authenticate_request::SaslAuthenticateRequest;
use ferry_protocol::messages::sasl_authenticate_response::SaslAuthenticateResponse;
use ferry_protocol::messages::sasl_handshake_request::SaslHandshakeRequest;
use ferry_protocol::messages::sasl_handshake_response::SaslHandshakeResponse;
use ferry_protocol::messages::RequestBody;
use ferry_protocol::wire::Message as _;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

/// Random bytes in the client's nonce (hex, so twice as many characters).
const CLIENT_NONCE_LEN: usize = 24;
/// The SaslHandshake and SaslAuthenticate versions a node sends.
const HANDSHAKE_VERSION: i16 = 1;
const AUTHENTICATE_VERSION: i16 = 2;
/// Largest answer taken during the exchange: SCRAM messages are a few
/// hundred bytes.
const ANSWER_BYTES_MAX: usize = 64 * 1024;

/// Why a node could not authenticate to another.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("SASL login: {0}")]
    Io(#[from] std::io::Error),
    #[error("SASL login: the request does not encode: {0}")]
    Encode(String),
    #[error("SASL login: the {what} answer does not decode: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("SASL login: an answer of {0} bytes (at most {ANSWER_BYTES_MAX})")]
    TooLarge(usize),
    #[error("SASL login: the server does not serve {mechanism} (it serves {served})")]
    Mechanism {
        mechanism: &'static str,
        served: String,
    },
    #[error("SASL login refused (error {code}): {message}")]
    Refused { code: i16, message: String },
    #[error("SASL login: {0}")]
    Scram(#[from] SaslError),
}

/// A SCRAM exchange from the client's side, between its first message and
/// the server's first.
pub struct ScramClient {
    mechanism: SaslMechanism,
    password: String,
    client_first_bare: String,
    nonce: String,
}

/// A SCRAM exchange after the client's final message: what the server's
/// final message must carry.
pub struct ScramClientFinal {
    server_signature: Vec<u8>,
}

/// `name` as a SCRAM saslname: `=` and `,` escaped (RFC 5802, 5.1).
fn saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    /// The client-first message (`n,,n=user,r=nonce`).
    pub fn start(
        mechanism: SaslMechanism,
        username: &str,
        password: &str,
    ) -> Result<(ScramClient, Vec<u8>), SaslError> {
        let nonce: String = scram::random_bytes(CLIENT_NONCE_LEN)?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        ScramClient::start_with_nonce(mechanism, username, password, &nonce)
    }

    /// [`ScramClient::start`] with a given nonce (for tests).
    pub fn start_with_nonce(
        mechanism: SaslMechanism,
        username: &str,
        password: &str,
        nonce: &str,
    ) -> Result<(ScramClient, Vec<u8>), SaslError> {
        scram::hash(mechanism)?;
        let client_first_bare = format!("n={},r={nonce}", saslname(username));
        let message = format!("n,,{client_first_bare}").into_bytes();
        Ok((
            ScramClient {
                mechanism,
                password: password.to_owned(),
                client_first_bare,
                nonce: nonce.to_owned(),
            },
            message,
        ))
    }

    /// Answers the server-first message (`r=,s=,i=`) with the client-final
    /// message. The server's nonce must extend the client's, and its
    /// iterations be within Kafka's bounds (a hostile server cannot make the
    /// node spend unbounded time).
    pub fn finish(self, server_first: &[u8]) -> Result<(ScramClientFinal, Vec<u8>), SaslError> {
        let text = std::str::from_utf8(server_first)
            .map_err(|_| SaslError::Malformed("SCRAM: server-first is not UTF-8".into()))?;
        let mut fields = text.split(',');
        let mut field = |prefix: &str| {
            fields
                .next()
                .and_then(|f| f.strip_prefix(prefix))
                .ok_or_else(|| SaslError::Malformed(format!("SCRAM: server-first has no {prefix}")))
        };
        let nonce = field("r=")?;
        let salt = field("s=")?;
        let iterations = field("i=")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(SaslError::BadNonce);
        }
        let salt = STANDARD
            .decode(salt.as_bytes())
            .map_err(|_| SaslError::Malformed("SCRAM: s= is not base64".into()))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| SaslError::Malformed("SCRAM: i= is not a number".into()))?;
        scram::check_iterations(iterations)?;
        let hash = scram::hash(self.mechanism)?;
        let salted = scram::salted_password(hash, &self.password, &salt, iterations)
            .ok_or(SaslError::IterationsOutOfRange { iterations })?;
        let key = hmac::Key::new(hash.hmac, &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored_key = digest::digest(hash.digest, client_key.as_ref());
        let server_key = hmac::sign(&key, b"Server Key");
        let without_proof = format!("c={},r={nonce}", STANDARD.encode("n,,"));
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = hmac::sign(
            &hmac::Key::new(hash.hmac, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_signature = hmac::sign(
            &hmac::Key::new(hash.hmac, server_key.as_ref()),
            auth_message.as_bytes(),
        )
        .as_ref()
        .to_vec();
        let message = format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes();
        Ok((ScramClientFinal { server_signature }, message))
    }
}

impl ScramClientFinal {
    /// Checks the server-final message (`v=signature`): only a server that
    /// holds the user's credential can make it.
    pub fn verify(self, server_final: &[u8]) -> Result<(), SaslError> {
        let text = std::str::from_utf8(server_final)
            .map_err(|_| SaslError::Malformed("SCRAM: server-final is not UTF-8".into()))?;
        let v = text
            .split(',')
            .next()
            .and_then(|f| f.strip_prefix("v="))
            .ok_or(SaslError::AuthenticationFailed)?;
        let v = STANDARD
            .decode(v.as_bytes())
            .map_err(|_| SaslError::Malformed("SCRAM: v= is not base64".into()))?;
        verify_slices_are_equal(&v, &self.server_signature)
            .map_err(|_| SaslError::AuthenticationFailed)
    }
}

/// Authenticates `stream` as `login`: SaslHandshake, then one (PLAIN) or
/// two (SCRAM) SaslAuthenticate round trips. The caller bounds the time.
pub async fn login<S>(stream: &mut S, login: &SaslLogin) -> Result<(), LoginError>
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    let mechanism = login.mechanism.name();
    let handshake = RequestBody::SaslHandshake(SaslHandshakeRequest {
        mechanism: mechanism.into(),
        ..Default::default()
    });
    let answer = round_trip(stream, 1, HANDSHAKE_VERSION, &handshake).await?;
    let answer = SaslHandshakeResponse::decode(&answer, HANDSHAKE_VERSION).map_err(|e| {
        LoginError::Decode {
            what: "SaslHandshake",
            reason: e.to_string(),
        }
    })?;
    if answer.error_code != 0 {
        return Err(LoginError::Mechanism {
            mechanism,
            served: answer
                .mechanisms
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    match login.mechanism {
        SaslMechanism::Plain => {
            let mut message = Vec::with_capacity(login.username.len() + login.password.len() + 2);
            message.push(0);
            message.extend_from_slice(login.username.as_bytes());
            message.push(0);
            message.extend_from_slice(login.password.as_bytes());
            authenticate(stream, 2, message).await?;
        }
        SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
            let (client, first) =
                ScramClient::start(login.mechanism, &login.username, &login.password)?;
            let server_first = authenticate(stream, 2, first).await?;
            let (last, client_final) = client.finish(&server_first)?;
            let server_final = authenticate(stream, 3, client_final).await?;
            last.verify(&server_final)?;
        }
    }
    Ok(())
}

/// One SaslAuthenticate: sends `message`, answers the server's bytes.
async fn authenticate<S>(
    stream: &mut S,
    correlation_id: i32,
    message: Vec<u8>,
) -> Result<Bytes, LoginError>
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    let body = RequestBody::SaslAuthenticate(SaslAuthenticateRequest {
        auth_bytes: Bytes::from(message),
        ..Default::default()
    });
    let answer = round_trip(stream, correlation_id, AUTHENTICATE_VERSION, &body).await?;
    let answer = SaslAuthenticateResponse::decode(&answer, AUTHENTICATE_VERSION).map_err(|e| {
        LoginError::Decode {
            what: "SaslAuthenticate",
            reason: e.to_string(),
        }
    })?;
    if answer.error_code != 0 {
        return Err(LoginError::Refused {
            code: answer.error_code,
            message: answer
                .error_message
                .map(|m| m.to_string())
                .unwrap_or_default(),
        });
    }
    Ok(answer.auth_bytes)
}

/// Writes one request and reads its answer's body (after the response
/// header).
async fn round_trip<S>(
    stream: &mut S,
    correlation_id: i32,
    version: i16,
    body: &RequestBody,
) -> Result<Bytes, LoginError>
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    let segments =
        ferry_protocol::frame::encode_request(correlation_id, Some("ferry-node"), version, body)
            .map_err(|e| LoginError::Encode(e.to_string()))?;
    for s in &segments {
        stream.write_all(s).await?;
    }
    stream.flush().await?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).await?;
    let size = u32::from_be_bytes(size) as usize;
    if size > ANSWER_BYTES_MAX {
        return Err(LoginError::TooLarge(size));
    }
    let mut frame = vec![0u8; size];
    stream.read_exact(&mut frame).await?;
    let header = ferry_protocol::frame::response_header_version(body.api_key(), version);
    // Correlation id, then (header v1) an empty tag buffer.
    let header_len = if header >= 1 { 5 } else { 4 };
    if frame.len() < header_len {
        return Err(LoginError::Decode {
            what: "response header",
            reason: format!("{} bytes", frame.len()),
        });
    }
    let got = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
    if got != correlation_id {
        return Err(LoginError::Decode {
            what: "response header",
            reason: format!("correlation id {got}, sent {correlation_id}"),
        });
    }
    Ok(Bytes::from(frame).slice(header_len..))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::scram::{parse_client_first, ScramCredential, ScramServer};

    /// The client's messages against the server of this crate: the right
    /// password authenticates and the server's signature checks out; a
    /// wrong one is refused by the server.
    #[test]
    fn client_and_server_agree() {
        for mechanism in [SaslMechanism::ScramSha256, SaslMechanism::ScramSha512] {
            let stored = ScramCredential::from_password(mechanism, "s3cret", None, 4096).unwrap();
            for (password, ok) in [("s3cret", true), ("wrong", false)] {
                let (client, first) = ScramClient::start(mechanism, "node,=1", password).unwrap();
                let first = parse_client_first(&first).unwrap();
                assert_eq!(first.username, "node,=1");
                let (server, server_first) =
                    ScramServer::start(mechanism, first, Some(&stored)).unwrap();
                let (last, client_final) = client.finish(&server_first).unwrap();
                match server.finish(&client_final) {
                    Ok((server_final, user)) => {
                        assert!(ok, "{password} was taken");
                        assert_eq!(user, "node,=1");
                        last.verify(&server_final).unwrap();
                    }
                    Err(e) => {
                        assert!(!ok, "{password} was refused: {e}");
                        assert_eq!(e, SaslError::AuthenticationFailed);
                    }
                }
            }
        }
    }

    /// A server that does not extend the client's nonce, asks for too many
    /// iterations, or signs wrongly is refused by the client.
    #[test]
    fn client_refuses_a_bad_server() {
        let m = SaslMechanism::ScramSha256;
        let start = || ScramClient::start_with_nonce(m, "u", "p", "abc").unwrap().0;
        let salt = STANDARD.encode(b"salt");
        assert_eq!(
            start()
                .finish(format!("r=xyz123,s={salt},i=4096").as_bytes())
                .err(),
            Some(SaslError::BadNonce)
        );
        assert_eq!(
            start()
                .finish(format!("r=abc,s={salt},i=4096").as_bytes())
                .err(),
            Some(SaslError::BadNonce)
        );
        assert_eq!(
            start()
                .finish(format!("r=abcdef,s={salt},i=10000000").as_bytes())
                .err(),
            Some(SaslError::IterationsOutOfRange {
                iterations: 10_000_000
            })
        );
        let (last, _) = start()
            .finish(format!("r=abcdef,s={salt},i=4096").as_bytes())
            .unwrap();
        let forged = format!("v={}", STANDARD.encode([7u8; 32]));
        assert_eq!(
            last.verify(forged.as_bytes()),
            Err(SaslError::AuthenticationFailed)
        );
    }
}
