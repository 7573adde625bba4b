//! A string that must never reach logs, errors or `Debug` output.

use std::fmt;

/// Holds a value that came from config after `${VAR}` interpolation and may
/// contain credentials (URLs with passwords, tokens). `Debug` and `Display`
/// print a redacted form; call [`Secret::expose`] at the point of use only.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Shows a URL with any password replaced, for messages about where Ebb tried
/// to connect.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "***".to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let user_info = &authority[..at];
            let user = user_info.split(':').next().unwrap_or("");
            format!(
                "{}{}:***@{}{}",
                &url[..scheme_end + 3],
                user,
                &authority[at + 1..],
                &rest[authority_end..]
            )
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn redact_url_hides_password_only() {
        assert_eq!(
            redact_url("postgres://ebb:pw@db:5432/state?sslmode=disable"),
            "postgres://ebb:***@db:5432/state?sslmode=disable"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("not a url"), "***");
    }
}
