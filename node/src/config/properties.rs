//! The `.properties` syntax (as `java.util.Properties` reads it): logical
//! lines, separators, escapes; and `--override key=value`.

use super::*;

/// One entry of a properties text: the unescaped key and value, and the line
/// the entry starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub key: String,
    pub value: String,
    pub line: usize,
}

pub(super) fn is_prop_space(c: char) -> bool {
    c == ' ' || c == '\t' || c == '\x0c'
}

/// Whether `s` ends in an odd number of backslashes, i.e. its last
/// backslash is not itself escaped.
pub(super) fn ends_with_escape(s: &str) -> bool {
    s.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Parses `java.util.Properties` text. Entries come back in file order; a
/// key given twice appears twice (the later one wins when they are applied).
///
/// Stricter than Java in two places, both to catch mistakes: a key with no
/// separator and no value (`foo` alone) is an error rather than `foo=""`, and
/// so is an empty key.
pub fn parse_properties(text: &str) -> Result<Vec<Property>, ConfigError> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, physical)) = lines.next() {
        let start = physical.trim_start_matches(is_prop_space);
        if start.is_empty() || start.starts_with('#') || start.starts_with('!') {
            continue;
        }
        let line = index + 1;
        let mut logical = start.to_owned();
        while ends_with_escape(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start_matches(is_prop_space)),
                None => break,
            }
        }
        out.push(split_entry(&logical, line)?);
    }
    Ok(out)
}

/// Splits one logical line into key and value, by Java's rules: the key ends
/// at the first unescaped `=`, `:` or whitespace; whitespace, then at most one
/// `=` or `:`, then whitespace again separate it from the value.
pub(super) fn split_entry(logical: &str, line: usize) -> Result<Property, ConfigError> {
    let bytes = logical.as_bytes();
    let mut i = 0;
    let mut key_end = None;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'=' | b':' | b' ' | b'\t' | b'\x0c' => {
                key_end = Some(i);
                break;
            }
            _ => i += 1,
        }
    }
    let Some(key_end) = key_end else {
        let key = unescape(logical, line)?;
        return Err(ConfigError::Syntax {
            line,
            message: format!("{key:?} has no value; write `{key}=` for an empty one"),
        });
    };
    let raw_key = &logical[..key_end];
    if raw_key.is_empty() {
        return Err(ConfigError::Syntax {
            line,
            message: "an entry has no key before its separator".to_owned(),
        });
    }
    // All separators are ASCII, so byte arithmetic stays on char boundaries.
    let mut rest = logical[key_end..].trim_start_matches(is_prop_space);
    let mut has_separator = bytes[key_end] == b'=' || bytes[key_end] == b':';
    if has_separator {
        // The key ended on the separator itself; trim_start kept it.
        rest = rest[1..].trim_start_matches(is_prop_space);
    } else if rest.starts_with('=') || rest.starts_with(':') {
        has_separator = true;
        rest = rest[1..].trim_start_matches(is_prop_space);
    }
    let key = unescape(raw_key, line)?;
    if !has_separator && rest.is_empty() {
        return Err(ConfigError::Syntax {
            line,
            message: format!("{key:?} has no value; write `{key}=` for an empty one"),
        });
    }
    // Trailing whitespace is trimmed (Kafka trims values), unless escaped.
    let mut raw_value = rest.trim_end_matches(is_prop_space);
    if raw_value.len() < rest.len() && ends_with_escape(raw_value) {
        raw_value = &rest[..raw_value.len() + 1];
    }
    let value = unescape(raw_value, line)?;
    Ok(Property { key, value, line })
}

/// Resolves backslash escapes: `\t \n \r \f`, `\uXXXX` (surrogate pairs
/// joined), and `\c` for any other `c` (so `\=`, `\:`, `\#`, `\\`, `\ `).
pub(super) fn unescape(raw: &str, line: usize) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            None => {}
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let high = read_hex4(&mut chars, line)?;
                let code = if (0xD800..0xDC00).contains(&high) {
                    let low = match (chars.next(), chars.next()) {
                        (Some('\\'), Some('u')) => read_hex4(&mut chars, line)?,
                        _ => return Err(bad_unicode(line)),
                    };
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(bad_unicode(line));
                    }
                    0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    high
                };
                out.push(char::from_u32(code).ok_or_else(|| bad_unicode(line))?);
            }
            Some(other) => out.push(other),
        }
    }
    Ok(out)
}

pub(super) fn read_hex4(chars: &mut std::str::Chars<'_>, line: usize) -> Result<u32, ConfigError> {
    let mut code = 0;
    for _ in 0..4 {
        let digit = chars
            .next()
            .and_then(|c| c.to_digit(16))
            .ok_or_else(|| bad_unicode(line))?;
        code = code * 16 + digit;
    }
    Ok(code)
}

pub(super) fn bad_unicode(line: usize) -> ConfigError {
    ConfigError::Syntax {
        line,
        message: "malformed \\uXXXX escape (four hex digits, surrogates in pairs)".to_owned(),
    }
}

/// Splits a `--override` argument `key=value` at its first `=`.
pub fn parse_override(arg: &str) -> Result<(String, String), ConfigError> {
    match arg.split_once('=') {
        Some((key, value))
            if !key.trim().is_empty() && !key.trim().contains(char::is_whitespace) =>
        {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(ConfigError::Override {
            got: redact_text(arg),
        }),
    }
}

// ---------------------------------------------------------------------------
// Redaction
// ---------------------------------------------------------------------------
