//! VRRP: the advertisement codec, the receiver's checks, the election
//! state machine, and the driver that runs it with its socket, tracks,
//! peer link and the movers of the floating IP.

pub mod driver;
pub mod machine;
pub mod packet;
pub mod peer_link;
pub mod socket;
pub mod track;
pub mod validate;
