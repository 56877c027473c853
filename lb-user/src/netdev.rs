//! The host's network settings the data plane depends on: interfaces,
//! per-interface sysctls and the kernel's local port range.

use std::{ffi::CString, ops::RangeInclusive, path::PathBuf};

use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("interface {0:?} does not exist")]
    NoSuchInterface(String),
    #[error("netlink query of {interface}: {message}")]
    Netlink { interface: String, message: String },
    #[error("cannot ask the kernel for the MAC address of {interface}: {source}")]
    MacAddress {
        interface: String,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} holds {text:?}, not a port range")]
    BadPortRange { path: PathBuf, text: String },
    #[error(
        "snat_ports {first}-{last} overlap the kernel's local port range {local_first}-{local_last} \
         (net.ipv4.ip_local_port_range), which the daemon's own connections use"
    )]
    SnatOverlapsLocalPorts {
        first: u16,
        last: u16,
        local_first: u16,
        local_last: u16,
    },
}

/// The interface's index, or an error naming it.
pub fn ifindex(name: &str) -> Result<u32, NetdevError> {
    let c_name = CString::new(name).map_err(|_| NetdevError::NoSuchInterface(name.to_owned()))?;
    // SAFETY: c_name is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
        0 => Err(NetdevError::NoSuchInterface(name.to_owned())),
        index => Ok(index),
    }
}

/// The id of the XDP program attached to the interface now, asked of the
/// kernel over rtnetlink (None: nothing attached).
pub async fn xdp_program_id(name: &str) -> Result<Option<u32>, NetdevError> {
    use futures_util::TryStreamExt;
    use rtnetlink::packet_route::link::{LinkAttribute, LinkXdp};
    let lookup = |e: rtnetlink::Error| NetdevError::Netlink {
        interface: name.to_owned(),
        message: e.to_string(),
    };
    let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| NetdevError::Netlink {
        interface: name.to_owned(),
        message: e.to_string(),
    })?;
    let query = async {
        let mut links = std::pin::pin!(handle.link().get().match_name(name.to_owned()).execute());
        let Some(message) = links.try_next().await.map_err(lookup)? else {
            return Err(NetdevError::NoSuchInterface(name.to_owned()));
        };
        Ok(message.attributes.iter().find_map(|attribute| match attribute {
            LinkAttribute::Xdp(xdp) => xdp.iter().find_map(|x| match x {
                LinkXdp::ProgId(id) if *id != 0 => Some(*id),
                _ => None,
            }),
            _ => None,
        }))
    };
    // Drive the connection alongside the query; nothing outlives the call.
    tokio::select! {
        result = query => result,
        () = connection => Err(NetdevError::Netlink { interface: name.to_owned(), message: "connection closed".to_owned() }),
    }
}

/// Counts the link changes the kernel announces (RTNLGRP_LINK): state,
/// addresses, MAC. One monitor per daemon wakes whatever follows the links
/// (the interface tracks, the data plane's interface MACs) at once instead
/// of polling fast.
pub fn spawn_link_monitor(
) -> std::io::Result<(tokio::sync::watch::Receiver<u64>, tokio::task::JoinHandle<()>)> {
    use futures_util::StreamExt;
    use rtnetlink::sys::AsyncSocket;
    let (mut connection, _handle, mut messages) = rtnetlink::new_connection()?;
    connection
        .socket_mut()
        .socket_mut()
        .bind(&rtnetlink::sys::SocketAddr::new(0, libc::RTMGRP_LINK as u32))?;
    let (changes, watcher) = tokio::sync::watch::channel(0_u64);
    let task = tokio::spawn(async move {
        let mut connection = std::pin::pin!(connection);
        loop {
            tokio::select! {
                () = &mut connection => return,
                message = messages.next() => match message {
                    Some(_) => changes.send_modify(|n| *n = n.wrapping_add(1)),
                    None => return,
                },
            }
        }
    });
    Ok((watcher, task))
}

/// The interface's Ethernet address, asked of the kernel (SIOCGIFHWADDR)
/// in the calling thread's network namespace. (`/sys/class/net` would show
/// the namespace sysfs was mounted in, which a thread that entered another
/// namespace with setns does not change.)
pub fn mac_address(name: &str) -> Result<[u8; 6], NetdevError> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let no_such = || NetdevError::NoSuchInterface(name.to_owned());
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(no_such());
    }
    let failed = |source| NetdevError::MacAddress {
        interface: name.to_owned(),
        source,
    };
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(failed(std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor that nothing else owns; closed on drop.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data, for which all zeroes is valid.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *to = from as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads the name and writes ifru_hwaddr of the
    // ifreq we own.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFHWADDR, &raw mut request) } != 0 {
        let error = std::io::Error::last_os_error();
        return Err(if error.raw_os_error() == Some(libc::ENODEV) {
            no_such()
        } else {
            failed(error)
        });
    }
    // SAFETY: the ioctl succeeded, so the union holds the hardware address.
    let address = unsafe { request.ifr_ifru.ifru_hwaddr };
    let mut mac = [0_u8; 6];
    for (to, from) in mac.iter_mut().zip(address.sa_data) {
        *to = from as u8;
    }
    Ok(mac)
}

/// "02:00:5e:ab:01:ff".
#[must_use]
pub fn format_mac(mac: &[u8; 6]) -> String {
    let octets: Vec<String> = mac.iter().map(|octet| format!("{octet:02x}")).collect();
    octets.join(":")
}

/// The inverse of [`format_mac`]; None unless exactly six hex octets.
#[must_use]
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let octets: Vec<u8> = text
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    <[u8; 6]>::try_from(octets).ok()
}

const LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The kernel's ephemeral port range.
pub fn local_port_range() -> Result<RangeInclusive<u16>, NetdevError> {
    let path = PathBuf::from(LOCAL_PORT_RANGE);
    let text = std::fs::read_to_string(&path).map_err(|source| NetdevError::Read {
        path: path.clone(),
        source,
    })?;
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    match (parts.next(), parts.next()) {
        (Some(Ok(first)), Some(Ok(last))) => Ok(first..=last),
        _ => Err(NetdevError::BadPortRange { path, text }),
    }
}

/// Makes the kernel take its own connections' ports from `range`, so that
/// clients' ports outside it can be kept (the data plane reads the range
/// back).
pub fn set_local_port_range(range: &RangeInclusive<u16>) -> Result<(), NetdevError> {
    let current = local_port_range()?;
    if current == *range {
        return Ok(());
    }
    let path = PathBuf::from(LOCAL_PORT_RANGE);
    std::fs::write(&path, format!("{} {}", range.start(), range.end()))
        .map_err(|source| NetdevError::Write { path, source })?;
    info!(
        from = format!("{}-{}", current.start(), current.end()),
        to = format!("{}-{}", range.start(), range.end()),
        "set net.ipv4.ip_local_port_range (local_ports), so that clients' ports outside it can be kept"
    );
    Ok(())
}

/// Whether the common clients' ephemeral ports (Linux 32768-60999) fall in
/// this host's own range, where they can never be kept.
pub fn covers_client_ports(local: &RangeInclusive<u16>) -> bool {
    *local.start() <= 60_999 && *local.end() >= 32_768
}

/// Refuses a SNAT range that the kernel could also hand to a local socket:
/// a backend's reply to such a socket would be taken for a NATed connection.
pub fn check_snat_ports(snat: &RangeInclusive<u16>, local: &RangeInclusive<u16>) -> Result<(), NetdevError> {
    if snat.start() <= local.end() && local.start() <= snat.end() {
        return Err(NetdevError::SnatOverlapsLocalPorts {
            first: *snat.start(),
            last: *snat.end(),
            local_first: *local.start(),
            local_last: *local.end(),
        });
    }
    Ok(())
}

/// Sysctls the data plane needs on each of its interfaces:
/// - `forwarding`: bpf_fib_lookup refuses to route for an interface that does
///   not forward, and a packet whose neighbour is unresolved is forwarded by
///   the kernel;
/// - `accept_local`: such a packet carries a local source address (the SNAT
///   address or the VIP), which the kernel otherwise drops as martian.
const INTERFACE_SYSCTLS: &[(&str, &str)] = &[("forwarding", "1"), ("accept_local", "1")];

pub fn prepare_interface_sysctls(interface: &str) -> Result<(), NetdevError> {
    for (name, value) in INTERFACE_SYSCTLS {
        let path = PathBuf::from(format!("/proc/sys/net/ipv4/conf/{interface}/{name}"));
        let current = std::fs::read_to_string(&path).map_err(|source| NetdevError::Read {
            path: path.clone(),
            source,
        })?;
        if current.trim() != *value {
            std::fs::write(&path, value).map_err(|source| NetdevError::Write {
                path: path.clone(),
                source,
            })?;
            info!(interface, sysctl = name, value, "set interface sysctl");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_detected_at_both_ends() {
        let local = 32768..=60999;
        assert!(check_snat_ports(&(20000..=29999), &local).is_ok());
        assert!(check_snat_ports(&(61000..=65535), &local).is_ok());
        assert!(check_snat_ports(&(20000..=32768), &local).is_err());
        assert!(check_snat_ports(&(60999..=65000), &local).is_err());
        assert!(check_snat_ports(&(40000..=40010), &local).is_err());
    }

    #[test]
    fn loopback_exists_and_nonsense_does_not() {
        assert_eq!(ifindex("lo").unwrap(), 1);
        assert!(matches!(
            ifindex("no-such-if0"),
            Err(NetdevError::NoSuchInterface(_))
        ));
    }

    #[test]
    fn the_mac_address_comes_from_the_kernel_and_nonsense_has_none() {
        assert_eq!(mac_address("lo").unwrap(), [0; 6], "loopback's all-zero address");
        for name in [
            "no-such-if0",
            "",
            "a-name-far-too-long-for-ifnamsiz",
            "nul\0inside",
        ] {
            assert!(
                matches!(mac_address(name), Err(NetdevError::NoSuchInterface(_))),
                "{name:?}"
            );
        }
    }
}
