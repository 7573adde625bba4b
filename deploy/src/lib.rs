//! Kubernetes manifests for Ebb (`deploy/k8s/`), embedded so tests can check
//! they agree with the code: the KEDA trigger must watch the list apalis-redis
//! actually uses, and the grace period must cover the worker's shutdown.

pub const WORKER: &str = include_str!("../k8s/worker.yaml");
pub const PLANNER: &str = include_str!("../k8s/planner.yaml");
pub const KEDA: &str = include_str!("../k8s/keda.yaml");

/// The `active` list of a destination's queue under the default prefix, as
/// the workers drain it (apalis-redis appends `:active` to the queue name).
pub fn active_list(destination: &str) -> String {
    format!(
        "{}:active",
        ebb_shared::queue::queue_name("ebb", destination)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of<'a>(manifest: &'a str, key: &str) -> Option<&'a str> {
        manifest
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().trim_matches('"'))
    }

    #[test]
    fn keda_watches_the_queues_the_workers_drain() {
        let lists: Vec<&str> = KEDA
            .lines()
            .filter_map(|l| l.trim().strip_prefix("listName:"))
            .map(|v| v.trim().trim_matches('"'))
            .collect();
        assert_eq!(
            lists,
            vec![active_list("crm_webhook"), active_list("replica")]
        );
    }

    #[test]
    fn grace_period_exceeds_the_default_shutdown_timeout() {
        let grace: u64 = value_of(WORKER, "terminationGracePeriodSeconds:")
            .and_then(|v| v.parse().ok())
            .expect("grace period");
        assert!(grace > 30, "default [worker].shutdown_timeout_secs is 30");
    }

    #[test]
    fn planner_probes_the_health_endpoints() {
        assert!(PLANNER.contains("path: /healthz") && PLANNER.contains("path: /readyz"));
        // `ebb serve` listens on loopback unless told otherwise, where the
        // kubelet's probes cannot reach it.
        assert!(PLANNER.contains("\"serve\", \"--listen\", \"0.0.0.0:8080\""));
    }

    #[test]
    fn worker_serves_and_probes_its_health_endpoints() {
        assert!(WORKER.contains("\"--listen\", \"0.0.0.0:8081\""));
        assert!(WORKER.contains("containerPort: 8081"));
        assert!(WORKER.contains("path: /healthz") && WORKER.contains("path: /readyz"));
    }
}
