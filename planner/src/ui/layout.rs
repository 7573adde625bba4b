//! The page shell (header, navigation, who is logged in) and the small
//! pieces every page uses: times, durations, counts, run states.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use ebb_shared::state::runs::RunState;
use maud::{DOCTYPE, Markup, html};

use super::session::Session;

/// The navigation's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Syncs,
    Dlq,
    Destinations,
}

/// A page: `title`, the section it belongs to, and its content. `live`
/// pages are refreshed in place every `ms` by the script while something
/// runs.
pub fn page(
    title: &str,
    session: &Session,
    section: Section,
    live: Option<u32>,
    content: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, true))
            body {
                header.top {
                    a.brand href="/" { "Ebb" }
                    nav {
                        a href="/" aria-current=[(section == Section::Syncs).then_some("page")] { "Syncs" }
                        a href="/dlq" aria-current=[(section == Section::Dlq).then_some("page")] { "Dead letters" }
                        a href="/destinations" aria-current=[(section == Section::Destinations).then_some("page")] { "Destinations" }
                    }
                    form.who method="post" action="/logout" {
                        span title="the API token this session logged in with" {
                            (session.caller.name) " · " (role(session))
                        }
                        (csrf(session))
                        button.link type="submit" { "Log out" }
                    }
                }
                main data-refresh-ms=[live] { (content) }
            }
        }
    }
}

fn head(title: &str, with_script: bool) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Ebb" }
            link rel="stylesheet" href="/assets/ui.css";
            @if with_script { script src="/assets/ui.js" defer {} }
        }
    }
}

fn role(session: &Session) -> &'static str {
    if session.is_operator() {
        "operator"
    } else {
        "viewer"
    }
}

/// The hidden field every state-changing form carries.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

pub fn login_page(guard: &str, next: &str, error: Option<&str>, insecure: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Log in", false))
            body.login {
                main {
                    h1 { "Ebb" }
                    @if let Some(error) = error { p.error role="alert" { (error) } }
                    form method="post" action="/login" {
                        input type="hidden" name="guard" value=(guard);
                        input type="hidden" name="next" value=(next);
                        @if insecure {
                            p.notice { "ebb serve runs with --insecure-no-auth: anyone can log in, as an operator." }
                        } @else {
                            label for="token" { "API token" }
                            input #token type="password" name="token" autocomplete="current-password" required autofocus;
                            p.hint { "A token from " code { "[api].tokens" } " in ebb.toml. Viewers can look; operators can also run, pause and replay." }
                        }
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

pub fn error_page(status: StatusCode, title: &str, detail: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, false))
            body.login {
                main {
                    h1 { (status.as_u16()) " " (title) }
                    p.error role="alert" { (detail) }
                    p { a href="/" { "Back to the syncs" } }
                }
            }
        }
    }
}

/// A moment, in UTC; the script shows it in the browser's zone and keeps
/// UTC on hover.
pub fn time(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            title=(at.format("%Y-%m-%d %H:%M:%S UTC")) { (at.format("%Y-%m-%d %H:%M UTC")) }
    }
}

/// How long ago, in words: "4 min ago".
pub fn ago(at: DateTime<Utc>) -> String {
    let secs = (Utc::now() - at).num_seconds();
    if secs < 0 {
        format!("in {}", span((-secs) as f64))
    } else {
        format!("{} ago", span(secs as f64))
    }
}

/// A duration in words, to the unit that matters: "850 ms", "12 s",
/// "4 min 10 s", "3 h 5 min", "2 d 4 h".
pub fn span(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 1.0 {
        format!("{} ms", (s * 1000.0).round() as i64)
    } else if s < 60.0 {
        format!("{:.0} s", s.floor())
    } else if s < 3600.0 {
        format!("{} min {} s", (s / 60.0).floor(), (s % 60.0).floor())
    } else if s < 86_400.0 {
        format!(
            "{} h {} min",
            (s / 3600.0).floor(),
            ((s % 3600.0) / 60.0).floor()
        )
    } else {
        format!(
            "{} d {} h",
            (s / 86_400.0).floor(),
            ((s % 86_400.0) / 3600.0).floor()
        )
    }
}

/// How long from `from` to `to` (or now).
pub fn between(from: DateTime<Utc>, to: Option<DateTime<Utc>>) -> String {
    span((to.unwrap_or_else(Utc::now) - from).num_milliseconds() as f64 / 1000.0)
}

/// A count with thousands separated: 1,234,567.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn run_state(state: RunState) -> Markup {
    let class = match state {
        RunState::Succeeded => "ok",
        RunState::Failed => "bad",
        RunState::Cancelled => "muted",
        RunState::Held => "warn",
        RunState::Planning | RunState::Running => "live",
    };
    html! { span.state.(class) { (state.as_str()) } }
}

/// What to do when a list is empty.
pub fn empty(what: &str, next: Markup) -> Markup {
    html! { div.empty { p { strong { (what) } } p { (next) } } }
}

/// A message at the top of a page, after an action.
pub fn notice(text: Option<String>) -> Markup {
    html! { @if let Some(text) = text { p.notice role="status" { (text) } } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_spans_read_as_people_write_them() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(-1_234_567), "-1,234,567");
        assert_eq!(span(0.25), "250 ms");
        assert_eq!(span(12.9), "12 s");
        assert_eq!(span(250.0), "4 min 10 s");
        assert_eq!(span(3.0 * 3600.0 + 300.0), "3 h 5 min");
        assert_eq!(span(2.0 * 86_400.0 + 4.0 * 3600.0), "2 d 4 h");
    }
}
