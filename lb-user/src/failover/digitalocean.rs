//! (being written: placeholder with the agreed settings type)

use crate::config::Secret;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigitalOceanSettings {
    pub reserved_ip: std::net::Ipv4Addr,
    pub token: Secret,
    pub droplet_id: Option<u64>,
    pub api_url: String,
    pub metadata_url: String,
    pub request_timeout: std::time::Duration,
    pub poll_interval: std::time::Duration,
    pub assign_timeout: std::time::Duration,
    pub reconcile_interval: std::time::Duration,
}
pub const DEFAULT_API_URL: &str = "https://api.digitalocean.com";
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssignOutcome {
    AlreadyAssigned { droplet_id: u64 },
}
impl std::fmt::Display for AssignOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
#[derive(Debug, thiserror::Error)]
#[error("the DigitalOcean mover is not built yet")]
pub struct DigitalOceanError;
pub struct DigitalOcean {
    settings: DigitalOceanSettings,
}
impl DigitalOcean {
    pub fn new(settings: DigitalOceanSettings) -> Result<Self, DigitalOceanError> {
        Ok(Self { settings })
    }
    pub fn settings(&self) -> &DigitalOceanSettings {
        &self.settings
    }
    pub async fn assign(&self) -> Result<AssignOutcome, DigitalOceanError> {
        Err(DigitalOceanError)
    }
}
