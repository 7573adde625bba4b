//! A valid config and a parser with a fixed environment, for the config
//! tests here and in each connector's folder.

use std::collections::HashMap;
use std::path::Path;

use super::{Config, ConfigError};

pub(crate) const VALID: &str = r#"
[state]
database_url = "${EBB_DATABASE_URL}"
redis_url    = "redis://127.0.0.1:6379"

[sources.warehouse]
type = "postgres"
url  = "${WAREHOUSE_URL}"

[destinations.crm_webhook]
type = "http"
url = "http://127.0.0.1:9000/contacts/batch"
headers = { Authorization = "Bearer ${CRM_TOKEN}" }
batch_size = 100

[destinations.replica]
type  = "postgres"
url   = "${WAREHOUSE_URL}"
table = "public.customers_synced"

[syncs.customers_to_replica]
source = "warehouse"
model = "SELECT id, email FROM analytics.customers"
primary_key = "id"
destination = "replica"
mode = "mirror"
schedule = "*/15 * * * *"
[syncs.customers_to_replica.mapping]
customer_id = "id"
email = "email"
"#;

pub(crate) fn env() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("EBB_DATABASE_URL", "postgres://ebb:s3cret@localhost/ebb"),
        ("WAREHOUSE_URL", "postgres://localhost/wh"),
        ("CRM_TOKEN", "tok-123"),
    ])
}

pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
    let env = env();
    Config::parse(Path::new("ebb.toml"), text, &|k| {
        env.get(k).map(|v| v.to_string())
    })
}
