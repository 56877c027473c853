//! A packet socket on one interface, for tests: captures the frames of one
//! ethertype that arrive there and sends frames out of it, as any host on
//! the link could.

use std::{
    io,
    mem::{size_of, zeroed},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Instant,
};

use anyhow::{bail, Context};

/// The ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Every frame (ETH_P_ALL). On a bridge's port only this sees what arrives:
/// the bridge takes frames before protocol-specific sockets would.
pub const EVERY_ETHERTYPE: u16 = 0x0003;

pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens the socket in the calling thread's network namespace (open it
    /// inside `Netns::run`; it may be used from any thread afterwards).
    pub fn open(interface: &str, ethertype: u16) -> anyhow::Result<Self> {
        let name = std::ffi::CString::new(interface)?;
        // SAFETY: `name` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {interface}");
        }
        // Protocol 0 receives nothing until bind names the ethertype and the
        // interface, so no frame of another interface slips in.
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
        address.sll_protocol = ethertype.to_be();
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

    /// The next frame that arrives (not one this host sends) before
    /// `deadline`; `None` if none does.
    pub fn receive_until(&self, deadline: Instant) -> anyhow::Result<Option<Vec<u8>>> {
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
            let mut buffer = [0u8; 2048];
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
            if from.sll_pkttype != libc::PACKET_OUTGOING {
                return Ok(Some(buffer[..length].to_vec()));
            }
        }
    }

    /// Sends one whole Ethernet frame out of the interface.
    pub fn send(&self, frame: &[u8]) -> anyhow::Result<()> {
        // SAFETY: the buffer is valid for its length; the socket is bound to
        // an interface, so no destination address is needed.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if usize::try_from(sent).ok() != Some(frame.len()) {
            return Err(io::Error::last_os_error()).context("send a frame");
        }
        Ok(())
    }
}
