//! Types shared across the kernel/user boundary, and the packet logic that is
//! pure enough to run (and be unit-tested) on the host as well as in XDP.
#![no_std]

pub mod conntrack;
pub mod csum;
pub mod headers;
pub mod limits;
pub mod maps;
pub mod nat;
pub mod stats;
pub mod synproxy;

#[cfg(test)]
extern crate std;
