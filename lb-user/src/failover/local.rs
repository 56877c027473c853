//! (being written: placeholder with the agreed settings type)

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSettings {
    pub interface: String,
    pub addresses: Vec<(std::net::Ipv4Addr, u8)>,
    pub garp_count: u32,
    pub garp_interval: std::time::Duration,
    pub garp_refresh: Option<std::time::Duration>,
}

#[derive(Debug, thiserror::Error)]
#[error("the local mover is not built yet")]
pub struct LocalError;

pub struct LocalMover {
    settings: LocalSettings,
}

impl LocalMover {
    pub fn new(settings: LocalSettings) -> Result<Self, LocalError> {
        Ok(Self { settings })
    }
    pub fn settings(&self) -> &LocalSettings {
        &self.settings
    }
    pub async fn take_over(&self) -> Result<String, LocalError> {
        Err(LocalError)
    }
    pub async fn announce_burst(&self) -> Result<(), LocalError> {
        Err(LocalError)
    }
    pub async fn announce(&self) -> Result<(), LocalError> {
        Err(LocalError)
    }
    pub async fn release(&self) -> Result<String, LocalError> {
        Err(LocalError)
    }
    pub async fn remove_leftovers(&self) -> Result<Vec<std::net::Ipv4Addr>, LocalError> {
        Err(LocalError)
    }
}
