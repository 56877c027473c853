//! VRRP advertisements on the wire (RFC 9568/5798 version 3, RFC 3768
//! version 2 with simple-text authentication as keepalived sends it):
//! encoding and decoding with typed errors. Semantic checks (VRID, priority,
//! interval, TTL, authentication) are the receiver's, in `validate`.

use std::net::Ipv4Addr;

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// The VRRP IPv4 multicast group.
pub const MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// Every advertisement is sent, and must arrive, with TTL 255.
pub const REQUIRED_TTL: u8 = 255;
const TYPE_ADVERTISEMENT: u8 = 1;
const HEADER_LEN: usize = 8;
const AUTH_DATA_LEN: usize = 8;
/// Version 2 authentication type "simple text password".
const AUTH_TYPE_PASS: u8 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V2,
    V3,
}

/// An advertisement's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advertisement {
    pub version: Version,
    pub vrid: u8,
    /// 0: the master is stopping; 255: the address owner.
    pub priority: u8,
    /// Version 3: centiseconds (12 bits). Version 2: whole seconds, stored
    /// here in centiseconds as well so that callers deal in one unit.
    pub interval_cs: u16,
    pub addresses: Vec<Ipv4Addr>,
    /// Version 2 only: the simple-text password (up to 8 bytes).
    pub auth: Option<[u8; AUTH_DATA_LEN]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: {0} bytes")]
    Truncated(usize),
    #[error("unsupported VRRP version {0}")]
    Version(u8),
    #[error("not an advertisement (type {0})")]
    Type(u8),
    #[error("address count {count} does not fit the {len}-byte message")]
    AddressCount { count: u8, len: usize },
    #[error("bad checksum")]
    Checksum,
    #[error("unsupported version 2 authentication type {0}")]
    AuthType(u8),
    #[error("version 3 reserved bits are set")]
    Reserved,
}

impl DecodeError {
    /// Stable name for counters.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Truncated(_) => "truncated",
            Self::Version(_) => "version",
            Self::Type(_) => "type",
            Self::AddressCount { .. } => "address_count",
            Self::Checksum => "checksum",
            Self::AuthType(_) => "auth_type",
            Self::Reserved => "reserved",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("version 2 advertises whole seconds from 1 to 255, not {0} cs")]
    V2Interval(u16),
    #[error("version 3 advertises 1 to 4095 centiseconds, not {0}")]
    V3Interval(u16),
    #[error("at most 255 addresses")]
    TooManyAddresses,
}

impl Advertisement {
    /// The VRRP message (without IP header). `source` and `destination` are
    /// the IP addresses it will be sent with (version 3's checksum covers them).
    pub fn encode(&self, source: Ipv4Addr, destination: Ipv4Addr) -> Result<Vec<u8>, EncodeError> {
        let count = u8::try_from(self.addresses.len()).map_err(|_| EncodeError::TooManyAddresses)?;
        let mut out = Vec::with_capacity(HEADER_LEN + 4 * self.addresses.len() + AUTH_DATA_LEN);
        let version = match self.version {
            Version::V2 => 2,
            Version::V3 => 3,
        };
        out.extend_from_slice(&[
            (version << 4) | TYPE_ADVERTISEMENT,
            self.vrid,
            self.priority,
            count,
        ]);
        match self.version {
            Version::V2 => {
                let seconds = self.interval_cs / 100;
                if !self.interval_cs.is_multiple_of(100) || !(1..=255).contains(&seconds) {
                    return Err(EncodeError::V2Interval(self.interval_cs));
                }
                let auth_type = if self.auth.is_some() { AUTH_TYPE_PASS } else { 0 };
                out.extend_from_slice(&[auth_type, seconds as u8]);
            }
            Version::V3 => {
                if !(1..=0x0fff).contains(&self.interval_cs) {
                    return Err(EncodeError::V3Interval(self.interval_cs));
                }
                out.extend_from_slice(&self.interval_cs.to_be_bytes());
            }
        }
        out.extend_from_slice(&[0, 0]);
        for address in &self.addresses {
            out.extend_from_slice(&address.octets());
        }
        if self.version == Version::V2 {
            out.extend_from_slice(&self.auth.unwrap_or([0; AUTH_DATA_LEN]));
        }
        let checksum = checksum(self.version, source, destination, &out);
        out[6..8].copy_from_slice(&checksum.to_be_bytes());
        Ok(out)
    }

    /// Decodes the VRRP message `bytes` received from `source` to `destination`.
    pub fn decode(bytes: &[u8], source: Ipv4Addr, destination: Ipv4Addr) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::Truncated(bytes.len()));
        }
        let version = match bytes[0] >> 4 {
            2 => Version::V2,
            3 => Version::V3,
            other => return Err(DecodeError::Version(other)),
        };
        if bytes[0] & 0x0f != TYPE_ADVERTISEMENT {
            return Err(DecodeError::Type(bytes[0] & 0x0f));
        }
        let count = bytes[3];
        let auth_len = if version == Version::V2 { AUTH_DATA_LEN } else { 0 };
        let expected = HEADER_LEN + 4 * usize::from(count) + auth_len;
        if bytes.len() < expected {
            return Err(DecodeError::AddressCount {
                count,
                len: bytes.len(),
            });
        }
        let message = &bytes[..expected];
        if checksum(version, source, destination, message) != 0 {
            return Err(DecodeError::Checksum);
        }
        let addresses = message[HEADER_LEN..HEADER_LEN + 4 * usize::from(count)]
            .chunks_exact(4)
            .map(|a| Ipv4Addr::new(a[0], a[1], a[2], a[3]))
            .collect();
        let (interval_cs, auth) = match version {
            Version::V2 => {
                let auth = match message[4] {
                    0 => None,
                    AUTH_TYPE_PASS => {
                        let mut data = [0; AUTH_DATA_LEN];
                        data.copy_from_slice(&message[expected - AUTH_DATA_LEN..]);
                        Some(data)
                    }
                    other => return Err(DecodeError::AuthType(other)),
                };
                (u16::from(message[5]) * 100, auth)
            }
            Version::V3 => {
                let field = u16::from_be_bytes([message[4], message[5]]);
                if field & 0xf000 != 0 {
                    return Err(DecodeError::Reserved);
                }
                (field, None)
            }
        };
        Ok(Self {
            version,
            vrid: message[1],
            priority: message[2],
            interval_cs,
            addresses,
            auth,
        })
    }
}

/// The password as version 2 carries it: up to 8 bytes, zero-padded
/// (keepalived truncates longer ones the same way).
#[must_use]
pub fn auth_data(password: &str) -> [u8; AUTH_DATA_LEN] {
    let mut data = [0; AUTH_DATA_LEN];
    for (slot, byte) in data.iter_mut().zip(password.bytes()) {
        *slot = byte;
    }
    data
}

/// Version 3 sums an IPv4 pseudo-header before the message; version 2 does not.
fn checksum(version: Version, source: Ipv4Addr, destination: Ipv4Addr, message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    if version == Version::V3 {
        for pair in source
            .octets()
            .chunks_exact(2)
            .chain(destination.octets().chunks_exact(2))
        {
            sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        sum += u32::from(IPPROTO_VRRP);
        sum += message.len() as u32;
    }
    for chunk in message.chunks(2) {
        let word = match chunk {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 108, 0, 5);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 108, 0, 6);

    fn v3() -> Advertisement {
        Advertisement {
            version: Version::V3,
            vrid: 50,
            priority: 255,
            interval_cs: 100,
            addresses: vec![Ipv4Addr::new(45, 55, 123, 242)],
            auth: None,
        }
    }

    fn v2() -> Advertisement {
        Advertisement {
            version: Version::V2,
            interval_cs: 100,
            auth: Some(auth_data("REDACTED")),
            ..v3()
        }
    }

    #[test]
    fn round_trips_both_versions() {
        for advert in [v3(), v2()] {
            let bytes = advert.encode(SRC, DST).unwrap();
            assert_eq!(Advertisement::decode(&bytes, SRC, DST).unwrap(), advert);
        }
    }

    #[test]
    fn version_2_layout_matches_rfc_3768() {
        let bytes = v2().encode(SRC, DST).unwrap();
        assert_eq!(&bytes[..6], &[0x21, 50, 255, 1, AUTH_TYPE_PASS, 1]);
        assert_eq!(&bytes[8..12], &[45, 55, 123, 242]);
        assert_eq!(&bytes[12..20], b"REDACTED");
        assert_eq!(bytes.len(), 20);
        // Version 2's checksum does not depend on the IP addresses.
        assert!(Advertisement::decode(&bytes, DST, SRC).is_ok());
    }

    #[test]
    fn version_3_checksum_covers_the_pseudo_header() {
        let bytes = v3().encode(SRC, MULTICAST_GROUP).unwrap();
        assert_eq!(&bytes[..6], &[0x31, 50, 255, 1, 0, 100]);
        assert_eq!(
            Advertisement::decode(&bytes, DST, MULTICAST_GROUP),
            Err(DecodeError::Checksum)
        );
    }

    #[test]
    fn every_corruption_is_a_typed_error() {
        let good = v3().encode(SRC, DST).unwrap();
        for len in 0..good.len() {
            assert!(
                Advertisement::decode(&good[..len], SRC, DST).is_err(),
                "truncated to {len}"
            );
        }
        let mut flipped = good.clone();
        flipped[9] ^= 1;
        assert_eq!(
            Advertisement::decode(&flipped, SRC, DST),
            Err(DecodeError::Checksum)
        );
        let mut version = good.clone();
        version[0] = 0x41;
        assert_eq!(
            Advertisement::decode(&version, SRC, DST),
            Err(DecodeError::Version(4))
        );
        let mut kind = good.clone();
        kind[0] = 0x32;
        assert_eq!(Advertisement::decode(&kind, SRC, DST), Err(DecodeError::Type(2)));
        let mut count = good;
        count[3] = 9;
        assert!(matches!(
            Advertisement::decode(&count, SRC, DST),
            Err(DecodeError::AddressCount { .. })
        ));
    }

    /// Adverts sent by a real keepalived, captured once by hand; the
    /// fixtures are the VRRP messages (what `decode` takes) and the IP
    /// addresses they travelled with, from the IP headers tcpdump showed.
    ///
    /// keepalived v2.2.7 (Debian 12's 1:2.2.7-1+b2), started as
    /// `keepalived -n -l -G -D --vrrp -f keepalived.conf` in a namespace
    /// whose eth1 (203.0.113.3/24) is a veth to a second namespace
    /// (203.0.113.2/24) and whose eth0 is another veth, with
    ///
    /// ```text
    /// global_defs {
    ///     vrrp_version 3
    /// }
    /// vrrp_instance VI_1 {
    ///     interface eth1
    ///     state MASTER
    ///     priority 200
    ///     virtual_router_id 50
    ///     advert_int 0.1
    ///     unicast_src_ip 203.0.113.3
    ///     unicast_peer {
    ///         203.0.113.2
    ///     }
    ///     virtual_ipaddress {
    ///         198.51.100.100/32 dev eth0
    ///     }
    /// }
    /// ```
    ///
    /// and captured in the second namespace with
    /// `tcpdump -i eth1 -n -xx -vv -c 5 ip proto 112`: every advert was
    /// these bytes after the 20-byte IP header (tos 0xc0, ttl 255).
    const KEEPALIVED_MASTER: [u8; 12] = [
        0x31, 0x32, 0xc8, 0x01, 0x00, 0x0a, 0x63, 0xa6, 0xc6, 0x33, 0x64, 0x64,
    ];
    /// The same keepalived on SIGTERM ("(VI_1) sent 0 priority"), captured
    /// with the filter `ip proto 112 and ip[22] = 0`.
    const KEEPALIVED_STOPPING: [u8; 12] = [
        0x31, 0x32, 0x00, 0x01, 0x00, 0x0a, 0x2b, 0xa7, 0xc6, 0x33, 0x64, 0x64,
    ];
    /// The same configuration without `unicast_src_ip` and `unicast_peer`
    /// (multicast), captured the same way.
    const KEEPALIVED_MULTICAST: [u8; 12] = [
        0x31, 0x32, 0xc8, 0x01, 0x00, 0x0a, 0xbf, 0x96, 0xc6, 0x33, 0x64, 0x64,
    ];
    const KEEPALIVED_SRC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);
    const KEEPALIVED_PEER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
    const KEEPALIVED_VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);

    /// The captured adverts: (bytes, destination, priority).
    const KEEPALIVED_CAPTURES: [(&[u8], Ipv4Addr, u8); 3] = [
        (&KEEPALIVED_MASTER, KEEPALIVED_PEER, 200),
        (&KEEPALIVED_STOPPING, KEEPALIVED_PEER, 0),
        (&KEEPALIVED_MULTICAST, MULTICAST_GROUP, 200),
    ];

    #[test]
    fn keepalived_version_3_adverts_decode_field_by_field() {
        for (bytes, destination, priority) in KEEPALIVED_CAPTURES {
            let advert = Advertisement::decode(bytes, KEEPALIVED_SRC, destination)
                .unwrap_or_else(|e| panic!("{bytes:02x?} to {destination}: {e}"));
            // Every field, spelled out rather than compared with our own encoding.
            assert_eq!(bytes[0] >> 4, 3, "version nibble");
            assert_eq!(bytes[0] & 0x0f, TYPE_ADVERTISEMENT, "type nibble");
            assert_eq!(advert.version, Version::V3);
            assert_eq!(advert.vrid, 50);
            assert_eq!(advert.priority, priority);
            // advert_int 0.1: 10 centiseconds, with the reserved bits clear.
            assert_eq!(advert.interval_cs, 10);
            assert_eq!(bytes[3], 1, "count of addresses");
            assert_eq!(advert.addresses, vec![KEEPALIVED_VIP]);
            assert_eq!(advert.auth, None);
            // The checksum covers the pseudo-header of the addresses it
            // travelled with: summed with them, the message folds to zero...
            assert_eq!(checksum(Version::V3, KEEPALIVED_SRC, destination, bytes), 0);
            // ...and with any other destination (or none) it does not verify.
            for other in [KEEPALIVED_SRC, KEEPALIVED_PEER, MULTICAST_GROUP] {
                if other != destination {
                    assert_eq!(
                        Advertisement::decode(bytes, KEEPALIVED_SRC, other),
                        Err(DecodeError::Checksum),
                        "{bytes:02x?} claimed to go to {other}"
                    );
                }
            }
            assert_ne!(checksum(Version::V2, KEEPALIVED_SRC, destination, bytes), 0);
        }
    }

    #[test]
    fn our_encoding_of_keepalived_fields_is_its_bytes() {
        for (bytes, destination, priority) in KEEPALIVED_CAPTURES {
            let advert = Advertisement {
                version: Version::V3,
                vrid: 50,
                priority,
                interval_cs: 10,
                addresses: vec![KEEPALIVED_VIP],
                auth: None,
            };
            assert_eq!(
                advert.encode(KEEPALIVED_SRC, destination).unwrap(),
                bytes,
                "priority {priority} to {destination}"
            );
        }
    }

    #[test]
    fn intervals_outside_each_version_are_refused() {
        let mut advert = v2();
        advert.interval_cs = 50;
        assert_eq!(advert.encode(SRC, DST), Err(EncodeError::V2Interval(50)));
        let mut advert = v3();
        advert.interval_cs = 4096;
        assert_eq!(advert.encode(SRC, DST), Err(EncodeError::V3Interval(4096)));
    }
}
