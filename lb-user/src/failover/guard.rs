//! (being written: placeholder with the agreed API)
use super::local::LocalSettings;
pub struct Guard;
impl Guard {
    pub fn spawn(_settings: &LocalSettings) -> std::io::Result<Self> {
        Err(std::io::Error::other("the guard is not built yet"))
    }
}
pub fn run_guard(_interface: &str, _addresses: &[(std::net::Ipv4Addr, u8)]) -> anyhow::Result<()> {
    anyhow::bail!("the guard is not built yet")
}
