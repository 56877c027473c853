//! Lookups in `xlb status --json`, so that tests read a service or a backend
//! the same way and fail naming what is missing.

use serde_json::Value;

/// The service named `name`.
pub fn service<'a>(status: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    status["services"]
        .as_array()
        .and_then(|services| services.iter().find(|s| s["name"] == name))
        .ok_or_else(|| anyhow::anyhow!("no service {name:?} in status: {status}"))
}

/// Backend `backend` of service `service`.
pub fn backend<'a>(status: &'a Value, service: &str, backend: &str) -> anyhow::Result<&'a Value> {
    self::service(status, service)?["backends"]
        .as_array()
        .and_then(|backends| backends.iter().find(|b| b["name"] == backend))
        .ok_or_else(|| anyhow::anyhow!("no backend {backend:?} in service {service:?}: {status}"))
}

/// A counter of service `service` (e.g. `connections_total`).
pub fn service_counter(status: &Value, service: &str, counter: &str) -> anyhow::Result<u64> {
    self::service(status, service)?[counter]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("service {service:?} has no counter {counter:?}"))
}

/// A data-plane counter (e.g. `forward_new`): one of the `counters`, by name.
pub fn dataplane_counter(status: &Value, name: &str) -> anyhow::Result<u64> {
    status["counters"]
        .as_array()
        .and_then(|counters| counters.iter().find(|c| c["name"] == name))
        .and_then(|c| c["value"].as_u64())
        .ok_or_else(|| anyhow::anyhow!("no data-plane counter {name:?} in status: {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_services_and_backends_and_names_what_is_missing() {
        let status = serde_json::json!({"services": [
            {"name": "frontend", "connections_total": 7, "backends": [{"name": "web1", "state": "up"}]},
        ]});
        assert_eq!(
            service_counter(&status, "frontend", "connections_total").unwrap(),
            7
        );
        assert_eq!(backend(&status, "frontend", "web1").unwrap()["state"], "up");
        let err = backend(&status, "frontend", "web9").unwrap_err().to_string();
        assert!(err.contains("web9"), "{err}");
        assert!(service(&status, "api").unwrap_err().to_string().contains("api"));
    }

    #[test]
    fn finds_a_dataplane_counter_and_names_a_missing_one() {
        let status = serde_json::json!({"counters": [
            {"name": "forward_new", "value": 3}, {"name": "pass_other_host", "value": 9},
        ]});
        assert_eq!(dataplane_counter(&status, "pass_other_host").unwrap(), 9);
        let err = dataplane_counter(&status, "drop_fragment")
            .unwrap_err()
            .to_string();
        assert!(err.contains("drop_fragment"), "{err}");
    }
}
