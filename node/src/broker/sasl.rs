//! SASL on a connection (KIP-152): SaslHandshake picks a mechanism, then
//! SaslAuthenticate carries its messages until the client is authenticated.
//!
//! On a SASL listener a connection may send only ApiVersions before it is
//! authenticated; any other request closes it, as in Kafka. PLAIN checks a
//! password against the user's stored SCRAM credential; SCRAM-SHA-256 and
//! SCRAM-SHA-512 run their exchange (`crate::security::scram`). A failed
//! attempt is answered SASL_AUTHENTICATION_FAILED (wrong password and
//! unknown user alike), counted in `/metrics` by listener and mechanism, and
//! the connection is closed. With `connections.max.reauth.ms`, a session
//! lasts that long (KIP-368): the client authenticates again on the same
//! connection, as the same principal, or its next request closes it.
//!
//! On a listener without SASL, both requests are answered
//! ILLEGAL_SASL_STATE and change nothing.

use crate::config::SaslMechanism;
use crate::node::NodeCtx;
use crate::security::scram::{self, SaslError, ScramServer};
use crate::security::Principal;
use ferry_protocol::error_code::ErrorCode;
use ferry_protocol::messages::sasl_authenticate_request::SaslAuthenticateRequest;
use ferry_protocol::messages::sasl_handshake_request::SaslHandshakeRequest;
use ferry_protocol::messages::{sasl_authenticate_response, sasl_handshake_response};
use std::time::{Duration, Instant};

/// Where a connection is in its authentication.
enum State {
    /// Waiting for SaslHandshake.
    Handshake,
    /// A mechanism was chosen; its first message is next.
    Chosen(SaslMechanism),
    /// A SCRAM exchange waits for the client's final message.
    Scram(SaslMechanism, Box<ScramServer>),
    /// Authenticated with `mechanism` until `expires` (if ever).
    Done {
        mechanism: SaslMechanism,
        expires: Option<Instant>,
    },
}

/// One connection's SASL state, kept by its reader.
pub struct SaslConn {
    mechanisms: Vec<SaslMechanism>,
    state: State,
    /// The principal of the first authentication: a re-authentication must
    /// be the same.
    principal: Option<Principal>,
    /// During a re-authentication: when the current session ends.
    session_expires: Option<Instant>,
}

/// What the connection does after a SASL request.
pub struct SaslAnswer<T> {
    pub response: T,
    /// Authenticated (or re-authenticated) as this principal.
    pub principal: Option<Principal>,
    /// Close the connection once the response is written.
    pub close: bool,
}

impl SaslConn {
    /// `mechanisms`: the listener's `sasl.enabled.mechanisms`, empty on a
    /// listener without SASL.
    pub fn new(mechanisms: Vec<SaslMechanism>) -> SaslConn {
        SaslConn {
            mechanisms,
            state: State::Handshake,
            principal: None,
            session_expires: None,
        }
    }

    fn enabled(&self) -> bool {
        !self.mechanisms.is_empty()
    }

    /// Whether a request other than SaslHandshake and SaslAuthenticate may
    /// be served now: always without SASL; with it, ApiVersions always and
    /// anything else only in a session that has not expired. The clock is
    /// read only when a session can expire.
    pub fn allows(&self, api_key: i16) -> bool {
        if !self.enabled() || api_key == ferry_protocol::messages::api_versions_request::API_KEY {
            return true;
        }
        let expires = match &self.state {
            State::Done { expires, .. } => *expires,
            // Re-authenticating: the old session still holds.
            _ if self.principal.is_some() => self.session_expires,
            _ => return false,
        };
        expires.is_none_or(|t| Instant::now() < t)
    }

    pub fn handshake(
        &mut self,
        req: &SaslHandshakeRequest,
        version: i16,
    ) -> SaslAnswer<sasl_handshake_response::SaslHandshakeResponse> {
        let mechanisms = self.mechanisms.iter().map(|m| m.name().into()).collect();
        let answer = |code: ErrorCode, close| SaslAnswer {
            response: sasl_handshake_response::SaslHandshakeResponse {
                error_code: code.code(),
                mechanisms,
                ..Default::default()
            },
            principal: None,
            close,
        };
        if !self.enabled() {
            return answer(ErrorCode::ILLEGAL_SASL_STATE, false);
        }
        if version == 0 {
            // v0 sends the mechanism's tokens without Kafka framing.
            return answer(ErrorCode::UNSUPPORTED_VERSION, true);
        }
        let asked =
            SaslMechanism::parse(req.mechanism.as_str()).filter(|m| self.mechanisms.contains(m));
        match (&self.state, asked) {
            (_, None) => answer(ErrorCode::UNSUPPORTED_SASL_MECHANISM, true),
            (State::Handshake, Some(m)) => {
                self.state = State::Chosen(m);
                answer(ErrorCode::NONE, false)
            }
            // KIP-368: a new handshake in a session, with the same mechanism.
            (State::Done { mechanism, expires }, Some(m)) if *mechanism == m => {
                self.session_expires = *expires;
                self.state = State::Chosen(m);
                answer(ErrorCode::NONE, false)
            }
            _ => answer(ErrorCode::ILLEGAL_SASL_STATE, true),
        }
    }

    /// One SaslAuthenticate. `listener` names the listener for the
    /// failure counter.
    pub fn authenticate(
        &mut self,
        ctx: &NodeCtx,
        listener: &str,
        req: &SaslAuthenticateRequest,
        version: i16,
    ) -> SaslAnswer<sasl_authenticate_response::SaslAuthenticateResponse> {
        use sasl_authenticate_response::SaslAuthenticateResponse;
        if !self.enabled() {
            return SaslAnswer {
                response: SaslAuthenticateResponse {
                    error_code: ErrorCode::ILLEGAL_SASL_STATE.code(),
                    error_message: Some(
                        format!("SASL is not enabled on listener {listener}").into(),
                    ),
                    ..Default::default()
                },
                principal: None,
                close: false,
            };
        }
        let state = std::mem::replace(&mut self.state, State::Handshake);
        let (mechanism, step) = match state {
            State::Chosen(m) => (m, self.first(ctx, m, &req.auth_bytes)),
            State::Scram(m, server) => (m, finish(*server, &req.auth_bytes)),
            other => {
                self.state = other;
                return fail(
                    ErrorCode::ILLEGAL_SASL_STATE,
                    "SaslAuthenticate without a SaslHandshake first".into(),
                );
            }
        };
        match step {
            Ok(Step::Continue(server, bytes)) => {
                self.state = State::Scram(mechanism, Box::new(server));
                SaslAnswer {
                    response: SaslAuthenticateResponse {
                        auth_bytes: bytes.into(),
                        ..Default::default()
                    },
                    principal: None,
                    close: false,
                }
            }
            Ok(Step::Done(user, bytes)) => {
                let principal = Principal::user(user);
                if self.principal.as_ref().is_some_and(|p| *p != principal) {
                    ctx.metrics.auth_failed(listener, mechanism.name());
                    return fail(
                        ErrorCode::SASL_AUTHENTICATION_FAILED,
                        "re-authentication must be as the same principal".into(),
                    );
                }
                // KIP-368: v1 clients learn how long the session lasts.
                let lifetime = ctx.reauth_ms.filter(|_| version >= 1);
                self.state = State::Done {
                    mechanism,
                    expires: ctx
                        .reauth_ms
                        .map(|ms| Instant::now() + Duration::from_millis(ms)),
                };
                if self.principal.is_some() {
                    ctx.metrics
                        .reauthentications
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                self.principal = Some(principal.clone());
                self.session_expires = None;
                SaslAnswer {
                    response: SaslAuthenticateResponse {
                        auth_bytes: bytes.into(),
                        session_lifetime_ms: lifetime.map_or(0, |ms| ms as i64),
                        ..Default::default()
                    },
                    principal: Some(principal),
                    close: false,
                }
            }
            Err(e) => {
                ctx.metrics.auth_failed(listener, mechanism.name());
                tracing::info!(listener, mechanism = mechanism.name(), error = %e, "SASL authentication failed");
                fail(
                    ErrorCode::SASL_AUTHENTICATION_FAILED,
                    format!(
                        "Authentication failed during authentication due to invalid credentials \
                         with SASL mechanism {}: {e}",
                        mechanism.name()
                    ),
                )
            }
        }
    }

    /// The mechanism's first message.
    fn first(
        &self,
        ctx: &NodeCtx,
        mechanism: SaslMechanism,
        bytes: &[u8],
    ) -> Result<Step, SaslError> {
        let security = ctx.security();
        match mechanism {
            SaslMechanism::Plain => {
                let (user, password) = scram::parse_plain(bytes)?;
                // The strongest stored credential checks the password.
                let ok = [SaslMechanism::ScramSha512, SaslMechanism::ScramSha256]
                    .into_iter()
                    .find_map(|m| security.credential(&user, m))
                    .is_some_and(|c| c.verify_password(&password));
                if ok {
                    Ok(Step::Done(user, Vec::new()))
                } else {
                    Err(SaslError::AuthenticationFailed)
                }
            }
            scram_mechanism => {
                let first = scram::parse_client_first(bytes)?;
                let credential = security.credential(&first.username, scram_mechanism);
                let (server, reply) = ScramServer::start(scram_mechanism, first, credential)?;
                Ok(Step::Continue(server, reply))
            }
        }
    }
}

enum Step {
    Continue(ScramServer, Vec<u8>),
    Done(String, Vec<u8>),
}

fn finish(server: ScramServer, bytes: &[u8]) -> Result<Step, SaslError> {
    let (reply, user) = server.finish(bytes)?;
    Ok(Step::Done(user, reply))
}

fn fail(
    code: ErrorCode,
    message: String,
) -> SaslAnswer<sasl_authenticate_response::SaslAuthenticateResponse> {
    SaslAnswer {
        response: sasl_authenticate_response::SaslAuthenticateResponse {
            error_code: code.code(),
            error_message: Some(message.into()),
            ..Default::default()
        },
        principal: None,
        close: true,
    }
}
