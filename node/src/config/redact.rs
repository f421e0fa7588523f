//! Redaction: which keys and URI parameters hold secrets, and how a value
//! or a whole text is shown with them replaced by [`super::REDACTED`].

use super::*;

/// Whether a key's value is secret as a whole: its name mentions a password,
/// secret, token, credential or JAAS config (Kafka's `sasl.jaas.config`),
/// or it is an inline private key (`ssl.keystore.key`).
pub fn is_sensitive_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    // `ssl.keystore.key` holds a private key inline.
    key.ends_with("keystore.key")
        || ["password", "secret", "token", "credential", "jaas"]
            .iter()
            .any(|word| key.contains(word))
}

/// Whether a URI query parameter carries a credential (`accessKey`,
/// `secretKey`, `sessionToken`, any `*password*`...).
pub(super) fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.ends_with("key")
        || ["secret", "password", "token", "credential"]
            .iter()
            .any(|word| name.contains(word))
}

/// The value of `key` as it may be shown: [`REDACTED`] for secret keys,
/// otherwise with URI credentials replaced.
pub fn redact_value(key: &str, value: &str) -> String {
    if is_sensitive_key(key) {
        REDACTED.to_owned()
    } else {
        redact_text(value)
    }
}

/// Replaces URI credentials anywhere in `text`: the values of secret query
/// parameters (up to the next `&`, `,` or whitespace) and the password of a
/// `scheme://user:password@host` user-info part. Works on text that does not
/// parse as a URI too, so error messages about bad URIs are safe.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // User-info passwords first: `://user:pass@`.
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let authority_end = after
            .find(|c: char| matches!(c, '/' | '?' | '#' | ',' | '&') || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..authority_end];
        match authority.rfind('@') {
            Some(at_sign) => match authority[..at_sign].split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(REDACTED);
                    out.push_str(&authority[at_sign..]);
                }
                None => out.push_str(authority),
            },
            None => out.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    out.push_str(rest);
    redact_params(&out)
}

pub(super) fn redact_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(['?', '&']) {
        out.push_str(&rest[..=pos]);
        rest = &rest[pos + 1..];
        let name_end = rest
            .find(|c: char| matches!(c, '=' | '&' | '?' | ',') || c.is_whitespace())
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        out.push_str(name);
        rest = &rest[name_end..];
        if is_secret_param(name) && rest.starts_with('=') {
            let value_end = rest[1..]
                .find(|c: char| matches!(c, '&' | ',') || c.is_whitespace())
                .map_or(rest.len(), |i| i + 1);
            out.push('=');
            out.push_str(REDACTED);
            rest = &rest[value_end..];
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------
// Typed values
// ---------------------------------------------------------------------------
