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

/// Query parameters whose values are credentials (libpq's `password` and
/// `sslpassword`, Redis's `password`, and the usual API-key names).
const SECRET_PARAMS: &[&str] = &[
    "password",
    "sslpassword",
    "pass",
    "pwd",
    "secret",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
];

/// Shows a URL with its password and credential query parameters replaced,
/// for messages about where Ebb tried to connect.
///
/// The user info is taken up to the *last* `@` of the URL, not cut at the
/// first `/`, `?` or `#` as a strict parser would: a password typed raw into
/// a connection URL (`postgres://ebb:s/cr?t@db/state`) is exactly what makes
/// a URL malformed, and must still be hidden. The query is read with a real
/// `application/x-www-form-urlencoded` parser.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "***".to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let (user, location) = match rest.rfind('@') {
        Some(at) => {
            let user_info = &rest[..at];
            let user = user_info.split(':').next().unwrap_or("");
            (format!("{user}:***@"), &rest[at + 1..])
        }
        None => (String::new(), rest),
    };
    let location = match location.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let redacted: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(
                    url::form_urlencoded::parse(query.as_bytes()).map(|(name, value)| {
                        let secret = SECRET_PARAMS.iter().any(|p| name.eq_ignore_ascii_case(p));
                        let value = if secret { "***".into() } else { value };
                        (name, value)
                    }),
                )
                .finish();
            let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
            format!("{path}?{}{fragment}", redacted.replace("%2A%2A%2A", "***"))
        }
        None => location.to_owned(),
    };
    format!("{scheme}{user}{location}")
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

    #[test]
    fn redact_url_hides_passwords_with_slashes_question_marks_and_at_signs() {
        for password in ["s/cr/t", "wh?t", "a@b", "p#ss", "x/y?z@w#v"] {
            let url = format!("postgres://ebb:{password}@db.internal:5432/state?sslmode=require");
            let shown = redact_url(&url);
            assert_eq!(
                shown, "postgres://ebb:***@db.internal:5432/state?sslmode=require",
                "password {password:?}"
            );
        }
        assert_eq!(
            redact_url("redis://:s/cr?t@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
    }

    #[test]
    fn redact_url_hides_credential_query_parameters() {
        assert_eq!(
            redact_url("postgres://db/state?user=ebb&password=hunter2&sslmode=require"),
            "postgres://db/state?user=ebb&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("redis://cache:6379/?PASSWORD=x%2Fy&db=2"),
            "redis://cache:6379/?PASSWORD=***&db=2"
        );
        let shown = redact_url("https://api.example.com/v1?api_key=abc123&q=1");
        assert!(!shown.contains("abc123"), "{shown}");
    }
}
