//! The xlb daemon: configuration, the data plane's maps, and the run loop.

pub mod admin;
pub mod admin_client;
pub mod bounded_http;
pub mod cli;
pub mod config;
pub mod control;
pub mod controller;
pub mod daemon;
pub mod dataplane;
pub mod exec;
pub mod failover;
pub mod health;
pub mod metrics;
pub mod netdev;
pub mod status;
#[cfg(test)]
mod test_support;
pub mod vrrp;
