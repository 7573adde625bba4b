//! A submitted HTML form (`application/x-www-form-urlencoded`), whose
//! fields may repeat (`id=3&id=7` from checkboxes), which serde's form
//! extractor cannot read.

use axum::body::Bytes;

#[derive(Debug, Default)]
pub struct FormFields(Vec<(String, String)>);

impl FormFields {
    pub fn parse(body: &Bytes) -> FormFields {
        FormFields(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The field's first value, unless it is absent or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Every value of a repeated field.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_fields_and_blanks() {
        let form = FormFields::parse(&Bytes::from_static(
            b"id=3&id=7&note=+&reason=bad%20email&action=replay",
        ));
        assert_eq!(form.all("id").collect::<Vec<_>>(), ["3", "7"]);
        assert_eq!(form.get("note"), None);
        assert_eq!(form.get("reason"), Some("bad email"));
        assert_eq!(form.get("missing"), None);
    }
}
