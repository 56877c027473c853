//! Moving the floating IP when this node's VRRP state changes. Each mover is
//! independent and optional: `local` (the address on an interface, announced
//! with gratuitous ARP), `digitalocean` (the reserved-IP API) and `exec`
//! (keepalived-style notify commands).

pub mod digitalocean;
pub mod garp;
pub mod guard;
pub mod local;
