//! The receiver's checks of RFC 5798 section 7.1 (and RFC 3768 for version
//! 2), beyond what decoding verified: an advertisement that fails one is
//! dropped and counted by reason, and never reaches the state machine.

use std::net::Ipv4Addr;

use super::packet::{Advertisement, Version, REQUIRED_TTL};

/// What this router expects of its peers' advertisements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    pub version: Version,
    pub vrid: u8,
    /// Version 2 simple-text password (as carried: 8 bytes, zero-padded).
    pub auth: Option<[u8; 8]>,
    /// Version 2 requires the same advertisement interval on every router.
    pub interval_cs: u16,
    /// Unicast peers: adverts are accepted only from these (empty: multicast).
    pub unicast_peers: Vec<Ipv4Addr>,
    /// This router's own addresses: its own adverts, looped back, are ignored.
    pub own_addresses: Vec<Ipv4Addr>,
}

/// Why an advertisement was dropped. Each has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("IP TTL {0} is not 255")]
    Ttl(u8),
    #[error("version differs from the configured one")]
    Version,
    #[error("VRID {0} is not ours")]
    Vrid(u8),
    #[error("authentication mismatch")]
    Auth,
    #[error("advertisement interval {0} cs differs from ours (version 2 requires equality)")]
    Interval(u16),
    #[error("sender {0} is not a configured unicast peer")]
    UnknownPeer(Ipv4Addr),
    #[error("our own advertisement")]
    Own,
}

impl Rejection {
    /// Stable name for counters.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ttl(_) => "ttl",
            Self::Version => "version",
            Self::Vrid(_) => "vrid",
            Self::Auth => "auth",
            Self::Interval(_) => "interval",
            Self::UnknownPeer(_) => "unknown_peer",
            Self::Own => "own",
        }
    }
}

/// Checks a decoded advertisement received from `source` with IP TTL `ttl`.
pub fn validate(
    advert: &Advertisement,
    source: Ipv4Addr,
    ttl: u8,
    expect: &Expectation,
) -> Result<(), Rejection> {
    if expect.own_addresses.contains(&source) {
        return Err(Rejection::Own);
    }
    // RFC 5798 requires TTL 255 always; keepalived relaxes it for unicast
    // peers (routed between subnets), so do we.
    if expect.unicast_peers.is_empty() && ttl != REQUIRED_TTL {
        return Err(Rejection::Ttl(ttl));
    }
    if !expect.unicast_peers.is_empty() && !expect.unicast_peers.contains(&source) {
        return Err(Rejection::UnknownPeer(source));
    }
    if advert.version != expect.version {
        return Err(Rejection::Version);
    }
    if advert.vrid != expect.vrid {
        return Err(Rejection::Vrid(advert.vrid));
    }
    // A zero interval would make Master_Down_Interval zero once learned.
    if advert.interval_cs == 0 {
        return Err(Rejection::Interval(0));
    }
    if advert.version == Version::V2 {
        if !constant_time_eq(&advert.auth.unwrap_or([0; 8]), &expect.auth.unwrap_or([0; 8]))
            || advert.auth.is_some() != expect.auth.is_some()
        {
            return Err(Rejection::Auth);
        }
        if advert.interval_cs != expect.interval_cs {
            return Err(Rejection::Interval(advert.interval_cs));
        }
    }
    Ok(())
}

fn constant_time_eq(a: &[u8; 8], b: &[u8; 8]) -> bool {
    a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vrrp::packet::auth_data;

    const PEER: Ipv4Addr = Ipv4Addr::new(10, 108, 0, 5);
    const ME: Ipv4Addr = Ipv4Addr::new(10, 108, 0, 6);

    fn expectation() -> Expectation {
        Expectation {
            version: Version::V2,
            vrid: 50,
            auth: Some(auth_data("REDACTED")),
            interval_cs: 100,
            unicast_peers: vec![PEER],
            own_addresses: vec![ME],
        }
    }

    fn advert() -> Advertisement {
        Advertisement {
            version: Version::V2,
            vrid: 50,
            priority: 255,
            interval_cs: 100,
            addresses: vec![Ipv4Addr::new(45, 55, 123, 242)],
            auth: Some(auth_data("REDACTED")),
        }
    }

    #[test]
    fn the_reference_peer_is_accepted() {
        assert_eq!(validate(&advert(), PEER, 255, &expectation()), Ok(()));
    }

    #[test]
    fn each_mismatch_is_its_own_rejection() {
        let e = expectation();
        let mut wrong_auth = advert();
        wrong_auth.auth = Some(auth_data("guess"));
        assert_eq!(validate(&wrong_auth, PEER, 255, &e), Err(Rejection::Auth));
        let mut no_auth = advert();
        no_auth.auth = None;
        assert_eq!(validate(&no_auth, PEER, 255, &e), Err(Rejection::Auth));
        let mut vrid = advert();
        vrid.vrid = 51;
        assert_eq!(validate(&vrid, PEER, 255, &e), Err(Rejection::Vrid(51)));
        let mut interval = advert();
        interval.interval_cs = 200;
        assert_eq!(validate(&interval, PEER, 255, &e), Err(Rejection::Interval(200)));
        let mut v3 = advert();
        v3.version = Version::V3;
        assert_eq!(validate(&v3, PEER, 255, &e), Err(Rejection::Version));
        let mut zero = advert();
        zero.version = Version::V3;
        zero.auth = None;
        zero.interval_cs = 0;
        let v3_expectation = Expectation {
            version: Version::V3,
            auth: None,
            ..e.clone()
        };
        assert_eq!(
            validate(&zero, PEER, 255, &v3_expectation),
            Err(Rejection::Interval(0))
        );
        let stranger = Ipv4Addr::new(10, 108, 0, 99);
        assert_eq!(
            validate(&advert(), stranger, 255, &e),
            Err(Rejection::UnknownPeer(stranger))
        );
        assert_eq!(validate(&advert(), ME, 255, &e), Err(Rejection::Own));
    }

    #[test]
    fn multicast_mode_requires_ttl_255() {
        let mut e = expectation();
        e.unicast_peers.clear();
        assert_eq!(validate(&advert(), PEER, 254, &e), Err(Rejection::Ttl(254)));
        assert_eq!(validate(&advert(), PEER, 255, &e), Ok(()));
    }
}
