//! Ebb's Kubernetes package: the Helm chart in `deploy/helm/ebb` and the
//! `Dockerfile` at the root. `deploy/tests/test_chart.py` renders the chart
//! with Helm and validates every manifest (run by `scripts/check-deploy.sh`);
//! the tests here check that the chart agrees with the code: its default
//! config is a valid `ebb.toml`, and KEDA watches the lists the workers drain.

pub const VALUES: &str = include_str!("../helm/ebb/values.yaml");
pub const SCALED_OBJECT: &str = include_str!("../helm/ebb/templates/worker-scaledobject.yaml");

/// The `active` list of a destination's queue, as the workers drain it
/// (apalis-redis appends `:active` to the queue name).
pub fn active_list(prefix: &str, destination: &str) -> String {
    format!(
        "{}:active",
        ebb_shared::queue::queue_name(prefix, destination)
    )
}

/// The block scalar under a top-level key of `values.yaml` (`key: |`),
/// without its indentation.
pub fn block_value(values: &str, key: &str) -> Option<String> {
    let mut lines = values.lines().skip_while(|l| *l != format!("{key}: |"));
    lines.next()?;
    let block: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with("  "))
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect();
    Some(block.join("\n"))
}

/// A scalar under a section of `values.yaml` (`section:` then `  key: value`).
pub fn nested_value<'a>(values: &'a str, section: &str, key: &str) -> Option<&'a str> {
    values
        .lines()
        .skip_while(|l| *l != format!("{section}:"))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' ') || l.starts_with('#'))
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ebb_shared::config::{Config, WorkerSettings};

    use super::*;

    fn default_config() -> Config {
        let text = block_value(VALUES, "config").expect("values.yaml has `config: |`");
        Config::parse(Path::new("values.yaml#config"), &text, &|name| {
            Some(match name {
                "EBB_DATABASE_URL" | "WAREHOUSE_URL" => "postgres://ebb@postgres/ebb".to_owned(),
                "EBB_REDIS_URL" => "redis://redis:6379".to_owned(),
                _ => "secret".to_owned(),
            })
        })
        .unwrap_or_else(|e| panic!("the chart's default config does not parse: {e}"))
    }

    #[test]
    fn the_charts_default_config_is_a_valid_ebb_toml() {
        let config = default_config();
        assert!(!config.syncs.is_empty());
    }

    #[test]
    fn keda_defaults_name_the_default_configs_destinations_and_prefix() {
        let config = default_config();
        let destinations = nested_value(VALUES, "keda", "destinations").expect("keda.destinations");
        let named: Vec<String> = config.destinations.keys().cloned().collect();
        assert_eq!(destinations, format!("[{}]", named.join(", ")));
        let prefix = nested_value(VALUES, "keda", "queuePrefix").expect("keda.queuePrefix");
        assert_eq!(prefix, config.state.queue_prefix);
    }

    #[test]
    fn keda_watches_the_lists_the_workers_drain() {
        let format = SCALED_OBJECT
            .lines()
            .find_map(|l| l.trim().strip_prefix("listName: {{ printf \""))
            .and_then(|rest| rest.split('"').next())
            .expect("listName is a printf of prefix and destination");
        let rendered = format
            .replacen("%s", "ebb", 1)
            .replacen("%s", "crm_webhook", 1);
        assert_eq!(rendered, active_list("ebb", "crm_webhook"));
    }

    #[test]
    fn the_default_grace_margin_leaves_the_default_shutdown_time() {
        let shutdown: u64 = nested_value(VALUES, "worker", "shutdownTimeoutSeconds")
            .and_then(|v| v.parse().ok())
            .expect("worker.shutdownTimeoutSeconds");
        assert_eq!(shutdown, WorkerSettings::default().shutdown_timeout_secs);
        let margin: u64 = nested_value(VALUES, "worker", "terminationGraceMarginSeconds")
            .and_then(|v| v.parse().ok())
            .expect("worker.terminationGraceMarginSeconds");
        assert!(margin >= 5, "the pod needs time to exit after the timeout");
    }
}
