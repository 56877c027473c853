//! The VRRP socket: a raw IPv4 socket for protocol 112 on one interface,
//! sending with TTL 255 (multicast to 224.0.0.18, or to each unicast peer)
//! and receiving whole datagrams, IP header included, so the receiver can
//! check the TTL and the source.

use std::{
    io,
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::packet::{Advertisement, DecodeError, IPPROTO_VRRP, MULTICAST_GROUP, REQUIRED_TTL};

/// Where adverts go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peers {
    Multicast,
    Unicast(Vec<Ipv4Addr>),
}

pub struct VrrpSocket {
    socket: Socket,
    source: Ipv4Addr,
    peers: Peers,
}

/// One received datagram.
#[derive(Debug)]
pub struct Received {
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
    pub ttl: u8,
    pub advert: Result<Advertisement, DecodeError>,
}

impl VrrpSocket {
    /// Opens the socket on `interface`, sending from `source`.
    pub fn open(interface: &str, source: Ipv4Addr, peers: Peers) -> io::Result<Self> {
        let socket = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )?;
        socket.bind_device(Some(interface.as_bytes()))?;
        socket.set_ttl_v4(u32::from(REQUIRED_TTL))?;
        socket.set_multicast_ttl_v4(u32::from(REQUIRED_TTL))?;
        // Our own multicast adverts must not come back to us.
        socket.set_multicast_loop_v4(false)?;
        if peers == Peers::Multicast {
            socket.set_multicast_if_v4(&source)?;
            socket.join_multicast_v4(&MULTICAST_GROUP, &source)?;
        }
        Ok(Self {
            socket,
            source,
            peers,
        })
    }

    /// Sends `advert` to every destination.
    pub fn send(&self, advert: &Advertisement) -> io::Result<()> {
        let destinations = match &self.peers {
            Peers::Multicast => vec![MULTICAST_GROUP],
            Peers::Unicast(peers) => peers.clone(),
        };
        for destination in destinations {
            let bytes = advert
                .encode(self.source, destination)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            self.socket
                .send_to(&bytes, &SockAddr::from(SocketAddrV4::new(destination, 0)))?;
        }
        Ok(())
    }

    /// Waits up to `timeout` for one datagram (on a blocking socket).
    pub fn receive(&self, timeout: Duration) -> io::Result<Received> {
        self.socket.set_read_timeout(Some(timeout))?;
        self.try_receive()
    }

    /// For use with an event loop: `try_receive` then returns WouldBlock
    /// when nothing is queued.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        self.socket.set_nonblocking(true)
    }

    /// One queued datagram.
    pub fn try_receive(&self) -> io::Result<Received> {
        let mut buffer = [MaybeUninit::<u8>::uninit(); 1500];
        let length = self.socket.recv(&mut buffer)?;
        // SAFETY: recv initialised the first `length` bytes.
        let bytes: Vec<u8> = buffer[..length]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        parse_datagram(&bytes)
    }
}

impl std::os::fd::AsRawFd for VrrpSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }
}

/// Splits a raw IPv4 datagram into its header fields and the advertisement.
fn parse_datagram(bytes: &[u8]) -> io::Result<Received> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    if bytes.len() < 20 || bytes[0] >> 4 != 4 {
        return Err(invalid("not an IPv4 datagram"));
    }
    let header_len = usize::from(bytes[0] & 0x0f) * 4;
    if header_len < 20 || bytes.len() < header_len {
        return Err(invalid("bad IPv4 header length"));
    }
    let source = Ipv4Addr::new(bytes[12], bytes[13], bytes[14], bytes[15]);
    let destination = Ipv4Addr::new(bytes[16], bytes[17], bytes[18], bytes[19]);
    Ok(Received {
        source,
        destination,
        ttl: bytes[8],
        advert: Advertisement::decode(&bytes[header_len..], source, destination),
    })
}
