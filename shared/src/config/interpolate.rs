//! `${VAR}` substitution from the environment.

use super::ConfigError;

/// Replaces every `${NAME}` in `raw` with the environment variable `NAME`.
/// `$${` escapes a literal `${`. `key_path` names the config key in errors;
/// the value itself is never put into an error, since it may be a secret.
pub fn interpolate(
    raw: &str,
    key_path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
            continue;
        }
        if let Some(body) = after.strip_prefix("${") {
            let Some(end) = body.find('}') else {
                return Err(ConfigError::Interpolation {
                    key: key_path.to_owned(),
                    message: "unterminated `${` (expected `${NAME}`)".to_owned(),
                });
            };
            let name = &body[..end];
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(ConfigError::Interpolation {
                    key: key_path.to_owned(),
                    message: format!(
                        "`${{{name}}}` is not a valid variable name (letters, digits, `_`)"
                    ),
                });
            }
            match lookup(name) {
                Some(value) => out.push_str(&value),
                None => {
                    return Err(ConfigError::MissingEnv {
                        key: key_path.to_owned(),
                        var: name.to_owned(),
                    });
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("abc".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_and_escapes() {
        assert_eq!(
            interpolate("Bearer ${TOKEN}", "k", &env).unwrap(),
            "Bearer abc"
        );
        assert_eq!(interpolate("a${EMPTY}b", "k", &env).unwrap(), "ab");
        assert_eq!(
            interpolate("cost $5 $${X}", "k", &env).unwrap(),
            "cost $5 ${X}"
        );
    }

    #[test]
    fn missing_variable_is_named() {
        let err = interpolate("${NOPE}", "destinations.crm.url", &env).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("NOPE"), "{msg}");
        assert!(msg.contains("destinations.crm.url"), "{msg}");
    }

    #[test]
    fn malformed_reference_is_an_error() {
        assert!(interpolate("${TOKEN", "k", &env).is_err());
        assert!(interpolate("${A-B}", "k", &env).is_err());
    }
}
