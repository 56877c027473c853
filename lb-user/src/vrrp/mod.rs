//! VRRP: the advertisement codec and the election state machine. The
//! driver (sockets, timers, movers of the floating IP) builds on these.

pub mod machine;
pub mod packet;
pub mod socket;
pub mod validate;
