//! ARP on one interface, for tests: a packet socket that captures the ARP
//! frames arriving there and sends ARP frames out of it.

use std::{
    io,
    mem::{size_of, zeroed},
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
pub use lb_user::failover::garp::{ArpFrame, Mac};
use lb_user::failover::garp::{ETHERTYPE_ARP, ETHERTYPE_IPV4, FRAME_LEN, HARDWARE_ETHERNET};

/// A packet socket bound to one interface for ARP frames.
pub struct ArpSocket {
    fd: OwnedFd,
}

impl ArpSocket {
    /// Opens the socket in the calling thread's network namespace (open it
    /// inside `Netns::run`; it may be used from any thread afterwards).
    pub fn open(interface: &str) -> anyhow::Result<Self> {
        let name = std::ffi::CString::new(interface)?;
        // SAFETY: `name` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {interface}");
        }
        // Protocol 0 receives nothing until bind names ARP and the interface,
        // so no frame of another interface slips in.
        // SAFETY: plain socket(2).
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("packet socket");
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: all zeros is a valid sockaddr_ll.
        let mut address: libc::sockaddr_ll = unsafe { zeroed() };
        address.sll_family = libc::AF_PACKET as libc::sa_family_t;
        address.sll_protocol = ETHERTYPE_ARP.to_be();
        address.sll_ifindex = i32::try_from(ifindex)?;
        // SAFETY: `address` is a sockaddr_ll of the length given.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&address).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if bound != 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("bind to {interface}"));
        }
        Ok(Self { fd })
    }

    /// The next ARP frame that arrives (not one this host sends) before
    /// `deadline`; `None` if none does.
    pub fn receive_until(&self, deadline: Instant) -> anyhow::Result<Option<ArpFrame>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut poll = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let timeout = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut poll, 1, timeout) };
            if ready < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error).context("poll");
            }
            if ready == 0 {
                return Ok(None);
            }
            let mut buffer = [0u8; 1600];
            // SAFETY: all zeros is a valid sockaddr_ll.
            let mut from: libc::sockaddr_ll = unsafe { zeroed() };
            let mut from_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: the buffer and address pointers are valid for the
            // lengths given.
            let length = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                    std::ptr::from_mut(&mut from).cast(),
                    &mut from_len,
                )
            };
            let length = usize::try_from(length)
                .map_err(|_| io::Error::last_os_error())
                .context("recvfrom")?;
            // A packet socket also sees what this host sends.
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            if let Some(frame) = parse(&buffer[..length]) {
                return Ok(Some(frame));
            }
        }
    }

    /// Every ARP frame that arrives until none has for `quiet`.
    pub fn receive_all(&self, quiet: Duration) -> anyhow::Result<Vec<ArpFrame>> {
        let mut frames = Vec::new();
        while let Some(frame) = self.receive_until(Instant::now() + quiet)? {
            frames.push(frame);
        }
        Ok(frames)
    }

    /// Sends `frame` out of the interface.
    pub fn send(&self, frame: &ArpFrame) -> anyhow::Result<()> {
        let bytes = frame.encode();
        // SAFETY: the buffer is valid for its length; the socket is bound to
        // an interface, so no destination address is needed.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if usize::try_from(sent).ok() != Some(bytes.len()) {
            return Err(io::Error::last_os_error()).context("send an ARP frame");
        }
        Ok(())
    }
}

/// An Ethernet frame carrying an IPv4 ARP packet, or `None`.
#[must_use]
pub fn parse(bytes: &[u8]) -> Option<ArpFrame> {
    if bytes.len() < FRAME_LEN {
        return None;
    }
    let u16_at = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    let mac_at = |at: usize| -> Mac { bytes[at..at + 6].try_into().expect("six bytes") };
    let ip_at = |at: usize| Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]);
    let is_ipv4_over_ethernet = u16_at(12) == ETHERTYPE_ARP
        && u16_at(14) == HARDWARE_ETHERNET
        && u16_at(16) == ETHERTYPE_IPV4
        && bytes[18] == 6
        && bytes[19] == 4;
    is_ipv4_over_ethernet.then(|| ArpFrame {
        destination: mac_at(0),
        source: mac_at(6),
        op: u16_at(20),
        sender_mac: mac_at(22),
        sender_ip: ip_at(28),
        target_mac: mac_at(32),
        target_ip: ip_at(38),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_back_what_encode_wrote() {
        let frame = ArpFrame::gratuitous([2, 0, 0, 0, 0, 7], Ipv4Addr::new(198, 51, 100, 100));
        assert_eq!(parse(&frame.encode()), Some(frame));
        let mut ipv4 = frame.encode();
        ipv4[13] = 0x00;
        assert_eq!(parse(&ipv4), None);
    }
}
