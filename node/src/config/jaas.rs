//! Kafka's `sasl.jaas.config` value, as far as a node reads it: one login
//! module entry, `<LoginModule class> <flag> key="value" ... ;`, of which a
//! node takes the `username` and `password` options to authenticate to
//! other nodes on a SASL inter-broker listener.

/// One parsed login module entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JaasEntry {
    /// The login module's class name, as written.
    pub module: String,
    /// `required`, `requisite`, `sufficient` or `optional`.
    pub flag: String,
    /// The options in order; values unquoted and unescaped.
    pub options: Vec<(String, String)>,
}

impl JaasEntry {
    /// The value of option `name`, if given.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a `sasl.jaas.config` value does not parse. Never carries a value
/// (it may be a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JaasError {
    #[error("no login module class")]
    NoModule,
    #[error("the flag after the login module is not required, requisite, sufficient or optional")]
    BadFlag,
    #[error("option {0:?} has no `=value`")]
    NoValue(String),
    #[error("option {0:?} has an unterminated quoted value")]
    Unterminated(String),
    #[error("the entry does not end with `;`, or more follows it")]
    NoEnd,
}

/// Parses one entry.
pub fn parse(text: &str) -> Result<JaasEntry, JaasError> {
    let mut rest = text.trim();
    let word = |rest: &mut &str| -> String {
        let end = rest
            .find(|c: char| c.is_whitespace() || c == ';' || c == '=')
            .unwrap_or(rest.len());
        let w = rest[..end].to_owned();
        *rest = rest[end..].trim_start();
        w
    };
    let module = word(&mut rest);
    if module.is_empty() {
        return Err(JaasError::NoModule);
    }
    let flag = word(&mut rest).to_ascii_lowercase();
    if !["required", "requisite", "sufficient", "optional"].contains(&flag.as_str()) {
        return Err(JaasError::BadFlag);
    }
    let mut options = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix(';') {
            if !after.trim().is_empty() {
                return Err(JaasError::NoEnd);
            }
            break;
        }
        if rest.is_empty() {
            return Err(JaasError::NoEnd);
        }
        let key = word(&mut rest);
        let Some(after) = rest.strip_prefix('=') else {
            return Err(JaasError::NoValue(key));
        };
        rest = after.trim_start();
        let value = if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, e)) => value.push(e),
                        None => break,
                    },
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let Some(end) = end else {
                return Err(JaasError::Unterminated(key));
            };
            rest = quoted[end + 1..].trim_start();
            value
        } else {
            word(&mut rest)
        };
        options.push((key, value));
    }
    Ok(JaasEntry {
        module,
        flag,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_examples_parse() {
        let e = parse(
            r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="node-1" password="p a\"ss;";"#,
        )
        .unwrap();
        assert_eq!(
            e.module,
            "org.apache.kafka.common.security.scram.ScramLoginModule"
        );
        assert_eq!(e.flag, "required");
        assert_eq!(e.option("username"), Some("node-1"));
        assert_eq!(e.option("password"), Some("p a\"ss;"));
        let e = parse(
            "org.apache.kafka.common.security.plain.PlainLoginModule required\n  username=admin\n  password=\"x\"\n  user_admin=\"x\";",
        )
        .unwrap();
        assert_eq!(e.option("username"), Some("admin"));
        assert_eq!(e.option("user_admin"), Some("x"));
        assert_eq!(e.option("missing"), None);
    }

    #[test]
    fn malformed_entries_are_refused_without_their_values() {
        let m = "org.example.Module";
        assert_eq!(parse(""), Err(JaasError::NoModule));
        assert_eq!(parse(&format!("{m} always;")), Err(JaasError::BadFlag));
        assert_eq!(
            parse(&format!("{m} required username;")),
            Err(JaasError::NoValue("username".into()))
        );
        assert_eq!(
            parse(&format!("{m} required password=\"secret;")),
            Err(JaasError::Unterminated("password".into()))
        );
        assert_eq!(
            parse(&format!("{m} required username=a")),
            Err(JaasError::NoEnd)
        );
        assert_eq!(
            parse(&format!("{m} required username=a; more")),
            Err(JaasError::NoEnd)
        );
        let e = parse(&format!("{m} required password=\"secret;")).unwrap_err();
        assert!(!e.to_string().contains("secret"));
    }
}
