//! The xlb daemon: configuration, the data plane's maps, and the run loop.

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod netdev;
pub mod status;
