//! The web UI, in a real browser: Debian's headless Chromium driven
//! through ChromeDriver (WebDriver), against the real `ebb serve`, a real
//! worker, Postgres and Redis. A person's path through it: log in, see the
//! sync, run it and watch the run finish, find a record the destination
//! refused, fix the destination, replay the record from the DLQ and see it
//! delivered; pause and resume the schedule. A viewer sees no buttons and
//! is refused if it posts anyway; a form without the session's CSRF token
//! is refused. Every page is photographed at desktop and phone width
//! (kept in the test's directory; `scripts/ui-screenshots.sh` writes them
//! to docs/ui/).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use ebb_tests::{
    TestEnv, create_replica, eventually, exec, free_port, seed_customers, wait_until_up,
};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::json;

const OPS: &str = "ops-token-0123456789abcdef";
const VIEWER: &str = "viewer-token-0123456789abcdef";

const CONFIG: &str = r#"
{HEADER}

[api]
tokens = [
  { name = "ops", token = "ops-token-0123456789abcdef", role = "operator" },
  { name = "grafana", token = "viewer-token-0123456789abcdef", role = "viewer" },
]

[destinations.replica]
type = "postgres"
url = "{APP_URL}"
table = "public.customers_synced"
batch_size = 10

[syncs.customers]
source = "warehouse"
model = "SELECT id, email, first_name, plan, ltv FROM analytics.customers"
primary_key = "id"
destination = "replica"
mode = "mirror"
schedule = "0 3 * * *"

[syncs.broken]
source = "warehouse"
model = "SELECT id, no_such_column FROM analytics.customers"
primary_key = "id"
destination = "replica"

[syncs.customers.mapping]
customer_id = "id"
email = "email"
first_name = "first_name"
plan = "plan"
lifetime_value = "ltv"
"#;

/// How long a page may take to show what the test waits for: a run of a
/// few batches on a loaded 2-core machine.
const PAGE_WAIT: Duration = Duration::from_secs(60);

/// ChromeDriver on a port of its own, and a browser session through it.
struct Browser {
    driver: std::process::Child,
    client: Client,
    shots: PathBuf,
}

impl Browser {
    async fn start(env: &TestEnv) -> Browser {
        let port = free_port();
        let log =
            std::fs::File::create(env.dir.join("chromedriver.log")).expect("chromedriver log");
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect(
                "chromedriver (Debian's chromium-driver; scripts/ensure-services.sh installs it)",
            );
        let url = format!("http://127.0.0.1:{port}");
        wait_until_up(&format!("{url}/status"), "chromedriver up").await;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--lang=en-US"],
            }),
        );
        let client = ClientBuilder::rustls()
            .expect("rustls connector")
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a Chromium session");
        let shots = env.dir.join("screenshots");
        std::fs::create_dir_all(&shots).expect("screenshots dir");
        Browser {
            driver,
            client,
            shots,
        }
    }

    async fn text(&self, css: &str) -> String {
        let found = self
            .client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => element.text().await.expect("element text"),
            Err(e) => panic!("no `{css}` on {}: {e}", self.path().await),
        }
    }

    async fn click(&self, css: &str) {
        self.client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` to click: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click `{css}`: {e}"));
    }

    /// Clicks a link or a submit button, and waits until the page it leads
    /// to has loaded (the old page's elements can match a selector too).
    async fn follow(&self, css: &str) {
        self.client
            .execute("window.ebbOldPage = true", vec![])
            .await
            .expect("mark the page");
        self.click(css).await;
        eventually(PAGE_WAIT, &format!("the page `{css}` leads to"), || async {
            let loaded = self
                .client
                .execute(
                    "return window.ebbOldPage === undefined && document.readyState === 'complete'",
                    vec![],
                )
                .await
                .ok()?;
            loaded.as_bool().filter(|l| *l).map(|_| ())
        })
        .await;
    }

    /// How many elements `css` matches on the page.
    async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .expect("find")
            .len()
    }

    /// Opens a page of the UI by its path.
    async fn open(&self, base: &str, path: &str) {
        self.client
            .goto(&format!("{base}{path}"))
            .await
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
    }

    /// Types into the field `css` matches.
    async fn type_into(&self, css: &str, text: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no field `{css}`: {e}"))
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into `{css}`: {e}"));
    }

    async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("find")
            .is_empty()
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Waits until `css`'s text contains `want` (pages that run refresh
    /// themselves), and returns it.
    async fn wait_for_text(&self, css: &str, want: &str) -> String {
        eventually(PAGE_WAIT, &format!("`{css}` to say `{want}`"), || async {
            let found = self.client.find(Locator::Css(css)).await.ok()?;
            found.text().await.ok().filter(|t| t.contains(want))
        })
        .await
    }

    /// A PNG of the page at desktop and phone width. Also into
    /// `EBB_UI_SCREENSHOTS` when set (scripts/ui-screenshots.sh).
    async fn photograph(&self, name: &str) {
        for (suffix, width, height) in [("", 1280, 900), ("-phone", 390, 844)] {
            self.client
                .set_window_size(width, height)
                .await
                .expect("window size");
            // Photograph once the browser has laid out and painted the
            // page at the new width (two animation frames later).
            self.client
                .execute_async(
                    "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
                    vec![],
                )
                .await
                .expect("a painted frame at the new width");
            let png = self.client.screenshot().await.expect("screenshot");
            assert!(png.starts_with(b"\x89PNG"), "a PNG of {name}");
            let file = format!("{name}{suffix}.png");
            std::fs::write(self.shots.join(&file), &png).expect("write screenshot");
            if let Ok(dir) = std::env::var("EBB_UI_SCREENSHOTS") {
                std::fs::write(PathBuf::from(dir).join(&file), &png)
                    .expect("write screenshot to EBB_UI_SCREENSHOTS");
            }
        }
        self.client
            .set_window_size(1280, 900)
            .await
            .expect("window size");
    }

    async fn log_in(&self, base: &str, token: &str) {
        self.open(base, "/").await;
        assert!(
            self.path().await.starts_with("/login"),
            "a page without a session sends to the login form"
        );
        self.type_into("#token", token).await;
        self.follow("body.login button[type=submit]").await;
        self.client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css("header.top"))
            .await
            .expect("logged in");
    }

    async fn cookie_and_csrf(&self) -> (String, String) {
        let cookie = self
            .client
            .get_named_cookie("ebb_session")
            .await
            .expect("session cookie");
        let csrf = self
            .client
            .find(Locator::Css("input[name=csrf]"))
            .await
            .expect("csrf field")
            .attr("value")
            .await
            .expect("csrf value")
            .expect("a csrf token");
        (format!("ebb_session={}", cookie.value()), csrf)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Posts a UI form as a browser would, with the session's cookie.
async fn post_form(
    base: &str,
    path: &str,
    cookie: &str,
    fields: &[(&str, &str)],
) -> (StatusCode, String) {
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(format!("{base}{path}"))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(fields)
                .finish(),
        )
        .send()
        .await
        .expect("post form");
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

async fn runs_of(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ebb_runs")
        .fetch_one(&env.state)
        .await
        .expect("count runs")
}

#[tokio::test]
async fn an_operator_runs_a_sync_finds_a_rejected_record_and_replays_it() {
    let mut env = TestEnv::new(CONFIG, &[]).await;
    seed_customers(&env.warehouse, 40).await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'bad-' || id WHERE id IN (7, 8, 9)",
    )
    .await;
    create_replica(&env.app).await;
    env.start_worker(2);
    let port = free_port();
    let mut serve = env.serve(port, &[]);
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&format!("{base}/healthz"), "ebb serve up").await;
    let browser = Browser::start(&env).await;

    // The login form, then the overview.
    browser.open(&base, "/runs/1").await;
    assert_eq!(
        browser.path().await,
        "/login?next=%2Fruns%2F1",
        "a deep link comes back after login"
    );
    browser.photograph("login").await;
    browser.type_into("#token", "not-a-token").await;
    browser.follow("body.login button[type=submit]").await;
    let refused = browser.text("p.error").await;
    assert!(refused.contains("not one of the API tokens"), "{refused}");
    browser.log_in(&base, OPS).await;
    assert_eq!(browser.path().await, "/");
    let row = browser.text("tr[data-sync=customers]").await;
    assert!(row.contains("never ran"), "{row}");
    assert!(row.contains("replica"), "{row}");
    assert!(row.contains("0 3 * * *"), "{row}");

    // The sync's page: run it, and watch the run finish.
    browser
        .follow("tr[data-sync=customers] a[href='/syncs/customers']")
        .await;
    assert_eq!(browser.path().await, "/syncs/customers");
    assert!(
        browser
            .text("main")
            .await
            .contains("This sync has never run.")
    );
    browser.follow("button[name=kind][value=run]").await;
    let run_path = browser.path().await;
    assert!(
        run_path.starts_with("/runs/"),
        "Run now opens the run: {run_path}"
    );
    let run_id: i64 = run_path
        .trim_start_matches("/runs/")
        .parse()
        .expect("run id");
    // The page refreshes itself while the run runs.
    browser.wait_for_text("h1 .state", "succeeded").await;
    let counts = browser.text("main").await;
    assert!(counts.contains("Delivered\n37"), "{counts}");
    assert!(
        counts.contains("Rejected by the destination\n3"),
        "{counts}"
    );
    assert!(
        counts.contains("ui:ops"),
        "the trigger names the UI and the token: {counts}"
    );
    let delivered: i64 = sqlx::query_scalar("SELECT delivered FROM ebb_runs WHERE id = $1")
        .bind(run_id)
        .fetch_one(&env.state)
        .await
        .expect("run");
    assert_eq!(delivered, 37);
    browser.photograph("run").await;

    // Find the refused record by its key.
    browser.type_into("form.search input[name=key]", "8").await;
    browser.follow("form.search button[type=submit]").await;
    let found = browser.text("table.records tbody").await;
    assert!(found.contains("rejected"), "{found}");
    assert!(
        found.contains("customers_synced_email_check"),
        "the destination's reason: {found}"
    );
    assert_eq!(browser.count("table.records tbody tr").await, 1);

    // The DLQ, grouped by reason; the entry's page with its payload.
    browser.follow("table.records tbody a").await;
    assert!(
        browser.path().await.starts_with("/dlq?sync=customers"),
        "{}",
        browser.path().await
    );
    let entries = browser.text("table.entries tbody").await;
    assert!(entries.contains("(8, bad-8,"), "{entries}");
    assert_eq!(
        browser.count("table.entries tbody tr").await,
        1,
        "{entries}"
    );
    browser.open(&base, "/dlq").await;
    // The three reasons differ by the refused row; they are one group.
    let groups = browser.text("table.groups tbody").await;
    assert!(groups.contains("customers_synced_email_check"), "{groups}");
    assert!(
        groups.contains("Failing row contains (…, …, …, …, …)"),
        "the record's values are left out: {groups}"
    );
    assert_eq!(browser.count("table.groups tbody tr").await, 1);
    assert_eq!(browser.text("table.groups tbody td.num").await, "3");
    browser.photograph("dlq").await;
    let entry_id: i64 = sqlx::query_scalar("SELECT id FROM ebb_dlq WHERE record_key = '8'")
        .fetch_one(&env.state)
        .await
        .expect("entry of 8");
    browser.follow(&format!("a[href='/dlq/{entry_id}']")).await;
    let payload = browser.text("pre.payload").await;
    assert!(payload.contains("bad-8"), "{payload}");
    browser.photograph("dlq-entry").await;

    // The destination is fixed: replay the one entry from its page.
    exec(
        &env.app,
        "ALTER TABLE public.customers_synced DROP CONSTRAINT customers_synced_email_check",
    )
    .await;
    browser.follow("button[name=action][value=replay]").await;
    assert!(
        browser.path().await.starts_with("/runs/"),
        "a replay opens its run"
    );
    browser.wait_for_text("h1 .state", "succeeded").await;
    let replay = browser.text("main").await;
    assert!(replay.contains("Delivered\n1"), "{replay}");
    assert!(
        replay.contains("dlq-replay:ui:ops"),
        "the replay names who asked: {replay}"
    );
    let email: String =
        sqlx::query_scalar("SELECT email FROM public.customers_synced WHERE customer_id = 8")
            .fetch_one(&env.app)
            .await
            .expect("record 8 delivered");
    assert_eq!(email, "bad-8");
    let status: String = sqlx::query_scalar("SELECT status FROM ebb_dlq WHERE id = $1")
        .bind(entry_id)
        .fetch_one(&env.state)
        .await
        .expect("entry");
    assert_eq!(status, "resolved");

    // Another one, by filtering on its key and replaying all that match.
    browser.open(&base, "/dlq?sync=customers&key=9").await;
    browser
        .follow("form.actions input[name=matching] ~ button[value=replay]")
        .await;
    browser.wait_for_text("h1 .state", "succeeded").await;
    assert!(browser.text("main").await.contains("Delivered\n1"));

    // The last one left: dismiss it, selected, with a note.
    browser.open(&base, "/dlq?sync=customers").await;
    assert_eq!(browser.count("table.entries tbody tr").await, 1);
    browser
        .type_into("#dlq-selection input[name=note]", "test accounts")
        .await;
    browser.click("#dlq-selection input[data-select-all]").await;
    browser.follow("#dlq-selection button[value=dismiss]").await;
    assert!(browser.text("p.notice").await.contains("1 entry dismissed"));
    let dismissed: Vec<(String, String)> = sqlx::query_as(
        "SELECT record_key, resolution FROM ebb_dlq WHERE status = 'discarded' ORDER BY id",
    )
    .fetch_all(&env.state)
    .await
    .expect("dismissed");
    assert_eq!(dismissed.len(), 1, "{dismissed:?}");
    assert_eq!(dismissed[0].0, "7");
    assert!(
        dismissed[0].1.contains("test accounts") && dismissed[0].1.contains("ui:ops"),
        "{dismissed:?}"
    );
    browser.photograph("dlq-empty").await;

    // Pause and resume the schedule.
    browser.open(&base, "/syncs/customers").await;
    browser
        .type_into(
            "form[action='/syncs/customers/pause'] input[name=note]",
            "migration tonight",
        )
        .await;
    browser
        .follow("form[action='/syncs/customers/pause'] button")
        .await;
    assert!(browser.text("p.notice").await.contains("Schedule paused"));
    assert!(browser.text("h1").await.contains("paused"));
    let paused: bool =
        sqlx::query_scalar("SELECT paused FROM ebb_sync_settings WHERE sync_name = 'customers'")
            .fetch_one(&env.state)
            .await
            .expect("setting");
    assert!(paused);
    browser.photograph("sync").await;
    browser
        .follow("form[action='/syncs/customers/resume'] button")
        .await;
    assert!(browser.text("p.notice").await.contains("Schedule resumed"));

    // The model is fixed for the dismissed record: a dry run plans it and
    // sends nothing; then a run sends it in its fixed version.
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'user7@example.org' WHERE id = 7",
    )
    .await;
    let runs_before = runs_of(&env).await;
    browser.follow("button[name=kind][value=dry_run]").await;
    let plan = browser.text("main").await;
    assert!(plan.contains("Nothing was sent"), "{plan}");
    assert!(
        plan.contains("Added\n1") && plan.contains("To send\n1"),
        "{plan}"
    );
    assert_eq!(runs_of(&env).await, runs_before, "a dry run records no run");
    browser.follow("button[name=kind][value=run]").await;
    browser.wait_for_text("h1 .state", "succeeded").await;
    assert!(browser.text("main").await.contains("Delivered\n1"));
    let email: String =
        sqlx::query_scalar("SELECT email FROM public.customers_synced WHERE customer_id = 7")
            .fetch_one(&env.app)
            .await
            .expect("record 7 delivered");
    assert_eq!(email, "user7@example.org");

    // A model that does not run: the page says what failed.
    browser.open(&base, "/syncs/broken").await;
    browser.follow("button[name=kind][value=dry_run]").await;
    let failed = browser.text("p.error").await;
    assert!(failed.contains("no_such_column"), "{failed}");

    // The other pages.
    browser.open(&base, "/").await;
    let row = browser.text("tr[data-sync=customers]").await;
    assert!(row.contains("succeeded"), "{row}");
    assert!(
        browser
            .has("tr[data-sync=customers] svg.chart rect.delivered")
            .await,
        "the run chart has bars"
    );
    browser.photograph("syncs").await;
    browser.open(&base, "/destinations").await;
    let destinations = browser.text("table.destinations tbody").await;
    assert!(
        destinations.contains("replica") && destinations.contains("postgres"),
        "{destinations}"
    );
    browser.photograph("destinations").await;

    // CSRF: the operator's own session, without its token or with another.
    let (cookie, csrf) = browser.cookie_and_csrf().await;
    let runs_before = runs_of(&env).await;
    for fields in [
        vec![("kind", "run")],
        vec![("kind", "run"), ("csrf", "0123")],
    ] {
        let (status, body) = post_form(&base, "/syncs/customers/run", &cookie, &fields).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("CSRF"), "{body}");
    }
    assert_eq!(
        runs_of(&env).await,
        runs_before,
        "a refused form starts nothing"
    );
    let (status, _) = post_form(
        &base,
        "/syncs/customers/pause",
        &cookie,
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "with the token the same session may act"
    );
    let (status, _) = post_form(
        &base,
        "/syncs/customers/resume",
        &cookie,
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    let page = reqwest::Client::new()
        .get(format!("{base}/dlq"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(page.status(), StatusCode::OK);
    let policy = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        policy.contains("frame-ancestors 'none'") && policy.contains("script-src 'self'"),
        "{policy}"
    );
    assert_eq!(
        page.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );

    // Log out: the cookie no longer opens anything.
    browser.follow("header.top form.who button").await;
    assert!(browser.path().await.starts_with("/login"));
    let stale = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("{base}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(
        stale.status(),
        StatusCode::SEE_OTHER,
        "a logged-out session is sent to the login form"
    );
    let runs_before = runs_of(&env).await;
    let (status, _) = post_form(
        &base,
        "/syncs/customers/run",
        &cookie,
        &[("csrf", csrf.as_str()), ("kind", "run")],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "a logged-out form is sent to log in"
    );
    assert_eq!(runs_of(&env).await, runs_before, "and starts nothing");

    // A viewer: no buttons, and refused if it posts anyway.
    browser.log_in(&base, VIEWER).await;
    browser.open(&base, "/syncs/customers").await;
    assert!(browser.text("header.top .who").await.contains("viewer"));
    for button in [
        "button[name=kind]",
        "form[action$='/pause']",
        "form[action$='/resume']",
    ] {
        assert!(!browser.has(button).await, "a viewer sees no `{button}`");
    }
    browser.open(&base, &format!("/runs/{run_id}")).await;
    assert!(!browser.has("form[action$='/cancel']").await);
    let (cookie, csrf) = browser.cookie_and_csrf().await;
    let runs_before = runs_of(&env).await;
    let (status, body) = post_form(
        &base,
        "/syncs/customers/run",
        &cookie,
        &[("csrf", csrf.as_str()), ("kind", "run")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("viewer"), "{body}");
    let api = reqwest::Client::new()
        .post(format!("{base}/api/v1/syncs/customers/runs"))
        .bearer_auth(VIEWER)
        .json(&json!({}))
        .send()
        .await
        .expect("api call");
    assert_eq!(
        api.status(),
        StatusCode::FORBIDDEN,
        "the API refuses the viewer too"
    );
    assert_eq!(
        runs_of(&env).await,
        runs_before,
        "the viewer started nothing"
    );

    // The login form itself: refused without its guard (login CSRF); behind
    // TLS (X-Forwarded-Proto), the session cookie is Secure too.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let form = client
        .get(format!("{base}/login"))
        .send()
        .await
        .expect("login page");
    let guard_cookie = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("ebb_login="))
        .and_then(|c| c.split(';').next())
        .expect("a login guard cookie")
        .to_owned();
    let guard = guard_cookie.trim_start_matches("ebb_login=").to_owned();
    let page = form.text().await.expect("login page");
    assert!(
        page.contains(&format!("value=\"{guard}\"")),
        "the form carries the guard"
    );
    let (status, _) = post_form(&base, "/login", "", &[("token", OPS)]).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a login without the guard is refused"
    );
    let logged_in = client
        .post(format!("{base}/login"))
        .header("cookie", &guard_cookie)
        .header("x-forwarded-proto", "https")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs([("guard", guard.as_str()), ("token", OPS), ("next", "/dlq")])
                .finish(),
        )
        .send()
        .await
        .expect("log in");
    assert_eq!(logged_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        logged_in
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some("/dlq")
    );
    let session = logged_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("ebb_session="))
        .expect("a session cookie")
        .to_owned();
    for flag in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(session.contains(flag), "{session}");
    }

    // A token removed from the config ends its sessions.
    env.replace_in_config(VIEWER, "viewer-token-rotated-0123456789");
    serve.kill().await.expect("stop serve");
    let _ = serve.wait().await;
    let mut serve = env.serve(port, &[]);
    wait_until_up(&format!("{base}/healthz"), "ebb serve up again").await;
    browser.open(&base, "/syncs/customers").await;
    assert!(
        browser.path().await.starts_with("/login"),
        "the rotated token's session is over"
    );
    serve.kill().await.expect("stop serve");
}
