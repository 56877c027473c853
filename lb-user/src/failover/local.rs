//! The `local` floating-IP mover: the floating addresses go on an interface
//! of this node (via rtnetlink) when it becomes master and come off when it
//! leaves, and gratuitous ARPs tell the segment's neighbours, whose entries
//! still point at the old master, where the addresses now are.
//!
//! Every operation opens its own netlink connection in the calling thread's
//! network namespace and resolves the interface anew, so an interface that
//! was recreated since the last call (new index, new MAC) is still found.

use std::{
    fmt::Write as _,
    future::Future,
    net::{IpAddr, Ipv4Addr},
    pin::pin,
    time::Duration,
};

use futures_util::TryStreamExt;
use rtnetlink::{
    packet_route::{address::AddressAttribute, link::LinkAttribute, AddressFamily},
    AddressMessageBuilder, Handle,
};

use super::garp::{ArpFrame, Mac, PacketSender};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSettings {
    pub interface: String,
    /// Each floating address with its prefix length (usually /32).
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// Gratuitous ARPs sent on takeover (keepalived: garp_master_repeat, default 5).
    pub garp_count: u32,
    /// Spacing of that burst (default 100 ms; the first goes at once).
    pub garp_interval: Duration,
    /// While master, announce again this often (keepalived garp_master_refresh);
    /// None: never. The driver does the timing.
    pub garp_refresh: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("local mover: {0}")]
    Settings(String),
    #[error("cannot open a netlink socket: {0}")]
    NetlinkSocket(#[source] std::io::Error),
    #[error("the netlink connection closed before the request finished")]
    NetlinkClosed,
    #[error("cannot start a runtime for the netlink requests: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("interface {interface:?} does not exist")]
    NoSuchInterface { interface: String },
    #[error("cannot look up interface {interface:?}: {source}")]
    LinkLookup {
        interface: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("interface {interface:?} has no Ethernet address to announce the floating addresses with")]
    NotEthernet { interface: String },
    #[error("cannot add {address}/{prefix} to {interface}: {source}")]
    Add {
        interface: String,
        address: Ipv4Addr,
        prefix: u8,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot remove {address}/{prefix} from {interface}: {source}")]
    Remove {
        interface: String,
        address: Ipv4Addr,
        prefix: u8,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot list the addresses of {interface}: {source}")]
    List {
        interface: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot send a gratuitous ARP for {address} on {interface}: {source}")]
    Garp {
        interface: String,
        address: Ipv4Addr,
        #[source]
        source: std::io::Error,
    },
}

pub struct LocalMover {
    settings: LocalSettings,
}

impl LocalMover {
    /// Checks the settings; touches nothing.
    pub fn new(settings: LocalSettings) -> Result<Self, LocalError> {
        check_settings(&settings.interface, &settings.addresses)?;
        Ok(Self { settings })
    }

    #[must_use]
    pub fn settings(&self) -> &LocalSettings {
        &self.settings
    }

    /// Adds every address (one already there is fine), then sends the first
    /// gratuitous ARP for each at once. The rest of the burst is
    /// `announce_burst`'s. Returns what was done, in one line. When only the
    /// announcement fails (e.g. the link is down), the addresses stay added
    /// and the error says so.
    pub async fn take_over(&self) -> Result<String, LocalError> {
        let settings = &self.settings;
        with_netlink(async |handle| {
            let link = find_link(handle, &settings.interface).await?;
            let mut added = Vec::new();
            let mut already_there = Vec::new();
            for &(address, prefix) in &settings.addresses {
                if add_address(handle, &link, address, prefix).await? {
                    added.push((address, prefix));
                } else {
                    already_there.push((address, prefix));
                }
            }
            let mut description = format!("{}:", settings.interface);
            describe(&mut description, "added", &added);
            describe(&mut description, "already there", &already_there);
            if settings.garp_count > 0 {
                send_gratuitous_arps(&link, &settings.addresses)?;
                let _ = write!(
                    description,
                    "; gratuitous ARP sent from {}",
                    crate::netdev::format_mac(&link.mac)
                );
            }
            Ok(description)
        })
        .await
    }

    /// The rest of the takeover burst: `garp_count - 1` more gratuitous ARPs
    /// per address, `garp_interval` apart. Cancel-safe: dropping it stops the
    /// burst between two announcements.
    pub async fn announce_burst(&self) -> Result<(), LocalError> {
        for _ in 1..self.settings.garp_count {
            tokio::time::sleep(self.settings.garp_interval).await;
            self.announce().await?;
        }
        Ok(())
    }

    /// One gratuitous ARP per address (the periodic refresh).
    pub async fn announce(&self) -> Result<(), LocalError> {
        let settings = &self.settings;
        with_netlink(async |handle| {
            let link = find_link(handle, &settings.interface).await?;
            send_gratuitous_arps(&link, &settings.addresses)
        })
        .await
    }

    /// Removes every address (one already gone is fine). Returns what was
    /// done, in one line.
    pub async fn release(&self) -> Result<String, LocalError> {
        remove_addresses(&self.settings.interface, &self.settings.addresses).await
    }

    /// At start-up, before the election: removes our addresses from the
    /// interface, whatever their prefix length, as a killed predecessor may
    /// have left them there; while they stay, this node answers ARP for them
    /// and takes traffic meant for the master. Returns those it removed.
    pub async fn remove_leftovers(&self) -> Result<Vec<Ipv4Addr>, LocalError> {
        let settings = &self.settings;
        with_netlink(async |handle| {
            let link = find_link(handle, &settings.interface).await?;
            let ours: Vec<Ipv4Addr> = settings.addresses.iter().map(|&(address, _)| address).collect();
            let mut leftovers = Vec::new();
            for (address, prefix) in list_addresses(handle, &link).await? {
                if ours.contains(&address) && remove_address(handle, &link, address, prefix).await? {
                    leftovers.push(address);
                }
            }
            Ok(leftovers)
        })
        .await
    }
}

/// Removes `addresses` from `interface` (one already gone is fine): the
/// release, also run by the guard process once the daemon has gone. Returns
/// what was done, in one line.
pub async fn remove_addresses(interface: &str, addresses: &[(Ipv4Addr, u8)]) -> Result<String, LocalError> {
    with_netlink(async |handle| {
        let link = find_link(handle, interface).await?;
        let mut removed = Vec::new();
        let mut not_there = Vec::new();
        for &(address, prefix) in addresses {
            if remove_address(handle, &link, address, prefix).await? {
                removed.push((address, prefix));
            } else {
                not_there.push((address, prefix));
            }
        }
        let mut description = format!("{interface}:");
        describe(&mut description, "removed", &removed);
        describe(&mut description, "not there", &not_there);
        Ok(description)
    })
    .await
}

/// Runs a mover's future to completion on a new current-thread runtime, for
/// callers that have none (the guard process, tests). Netlink and packet
/// sockets are opened in the calling thread's network namespace.
pub fn block_on<F: Future>(future: F) -> Result<F::Output, LocalError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LocalError::Runtime)?;
    Ok(runtime.block_on(future))
}

pub(super) fn check_settings(interface: &str, addresses: &[(Ipv4Addr, u8)]) -> Result<(), LocalError> {
    if interface.is_empty() {
        return Err(LocalError::Settings("no interface given".to_owned()));
    }
    if addresses.is_empty() {
        return Err(LocalError::Settings(format!(
            "no floating address given for {interface}"
        )));
    }
    if let Some((address, prefix)) = addresses.iter().find(|(_, prefix)| *prefix > 32) {
        return Err(LocalError::Settings(format!(
            "{address}/{prefix}: an IPv4 prefix is at most 32 bits"
        )));
    }
    Ok(())
}

/// The interface as the kernel knows it now.
struct Link {
    name: String,
    index: u32,
    mac: Mac,
}

/// Runs `body` with a fresh rtnetlink connection, driving the connection
/// alongside so that no background task outlives the call.
async fn with_netlink<T>(body: impl AsyncFnOnce(&Handle) -> Result<T, LocalError>) -> Result<T, LocalError> {
    let (connection, handle, _unsolicited) =
        rtnetlink::new_connection().map_err(LocalError::NetlinkSocket)?;
    tokio::select! {
        result = body(&handle) => result,
        () = connection => Err(LocalError::NetlinkClosed),
    }
}

/// The errno of a kernel's negative acknowledgement.
fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}

async fn find_link(handle: &Handle, interface: &str) -> Result<Link, LocalError> {
    let no_such_interface = || LocalError::NoSuchInterface {
        interface: interface.to_owned(),
    };
    let mut links = pin!(handle.link().get().match_name(interface.to_owned()).execute());
    let message = match links.try_next().await {
        Ok(Some(message)) => message,
        Ok(None) => return Err(no_such_interface()),
        Err(error) if errno(&error) == Some(libc::ENODEV) => return Err(no_such_interface()),
        Err(source) => {
            return Err(LocalError::LinkLookup {
                interface: interface.to_owned(),
                source,
            })
        }
    };
    let mac = message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::Address(bytes) => Mac::try_from(bytes.as_slice()).ok(),
            _ => None,
        })
        .ok_or_else(|| LocalError::NotEthernet {
            interface: interface.to_owned(),
        })?;
    Ok(Link {
        name: interface.to_owned(),
        index: message.header.index,
        mac,
    })
}

/// Adds `address/prefix` with global scope. Returns false when it was
/// already there.
async fn add_address(
    handle: &Handle,
    link: &Link,
    address: Ipv4Addr,
    prefix: u8,
) -> Result<bool, LocalError> {
    match handle
        .address()
        .add(link.index, IpAddr::V4(address), prefix)
        .execute()
        .await
    {
        Ok(()) => Ok(true),
        Err(error) if errno(&error) == Some(libc::EEXIST) => Ok(false),
        Err(source) => Err(LocalError::Add {
            interface: link.name.clone(),
            address,
            prefix,
            source,
        }),
    }
}

/// Removes `address/prefix`. Returns false when it was not there.
async fn remove_address(
    handle: &Handle,
    link: &Link,
    address: Ipv4Addr,
    prefix: u8,
) -> Result<bool, LocalError> {
    let message = AddressMessageBuilder::<Ipv4Addr>::new()
        .index(link.index)
        .address(address, prefix)
        .build();
    match handle.address().del(message).execute().await {
        Ok(()) => Ok(true),
        Err(error) if matches!(errno(&error), Some(libc::EADDRNOTAVAIL | libc::ENOENT)) => Ok(false),
        Err(source) => Err(LocalError::Remove {
            interface: link.name.clone(),
            address,
            prefix,
            source,
        }),
    }
}

/// The IPv4 addresses on the interface, with their prefix lengths.
async fn list_addresses(handle: &Handle, link: &Link) -> Result<Vec<(Ipv4Addr, u8)>, LocalError> {
    let mut request = handle.address().get().set_link_index_filter(link.index);
    request.message_mut().header.family = AddressFamily::Inet;
    let mut messages = pin!(request.execute());
    let mut addresses = Vec::new();
    loop {
        let message = match messages.try_next().await {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(addresses),
            Err(source) => {
                return Err(LocalError::List {
                    interface: link.name.clone(),
                    source,
                })
            }
        };
        // IFA_LOCAL is the interface's own address (IFA_ADDRESS differs from
        // it only on point-to-point links).
        let local = message.attributes.iter().find_map(|attribute| match attribute {
            AddressAttribute::Local(IpAddr::V4(address)) => Some(*address),
            _ => None,
        });
        if let Some(address) = local {
            addresses.push((address, message.header.prefix_len));
        }
    }
}

fn send_gratuitous_arps(link: &Link, addresses: &[(Ipv4Addr, u8)]) -> Result<(), LocalError> {
    let garp_error = |address: Ipv4Addr| {
        let interface = link.name.clone();
        move |source| LocalError::Garp {
            interface,
            address,
            source,
        }
    };
    let Some(&(first, _)) = addresses.first() else {
        return Ok(());
    };
    let sender = PacketSender::open(link.index).map_err(garp_error(first))?;
    for &(address, _) in addresses {
        sender
            .send(&ArpFrame::gratuitous(link.mac, address).encode())
            .map_err(garp_error(address))?;
    }
    Ok(())
}

/// Appends "` verb a/p, b/p`" (or nothing for no addresses) to a description.
fn describe(description: &mut String, verb: &str, addresses: &[(Ipv4Addr, u8)]) {
    if addresses.is_empty() {
        return;
    }
    let separator = if description.ends_with(':') { " " } else { "; " };
    let list: Vec<String> = addresses
        .iter()
        .map(|(address, prefix)| format!("{address}/{prefix}"))
        .collect();
    let _ = write!(description, "{separator}{verb} {}", list.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LocalSettings {
        LocalSettings {
            interface: "eth0".to_owned(),
            addresses: vec![(Ipv4Addr::new(198, 51, 100, 100), 32)],
            garp_count: 5,
            garp_interval: Duration::from_millis(100),
            garp_refresh: Some(Duration::from_secs(60)),
        }
    }

    #[test]
    fn settings_need_an_interface_addresses_and_real_prefixes() {
        assert!(LocalMover::new(settings()).is_ok());
        let no_interface = LocalSettings {
            interface: String::new(),
            ..settings()
        };
        let no_addresses = LocalSettings {
            addresses: vec![],
            ..settings()
        };
        let long_prefix = LocalSettings {
            addresses: vec![(Ipv4Addr::new(198, 51, 100, 100), 33)],
            ..settings()
        };
        for bad in [no_interface, no_addresses, long_prefix] {
            assert!(matches!(LocalMover::new(bad), Err(LocalError::Settings(_))));
        }
    }

    #[test]
    fn descriptions_list_each_outcome_once() {
        let mut description = "eth0:".to_owned();
        describe(&mut description, "added", &[(Ipv4Addr::new(10, 0, 0, 1), 32)]);
        describe(&mut description, "not there", &[]);
        describe(
            &mut description,
            "already there",
            &[(Ipv4Addr::new(10, 0, 0, 2), 32), (Ipv4Addr::new(10, 0, 0, 3), 24)],
        );
        assert_eq!(
            description,
            "eth0: added 10.0.0.1/32; already there 10.0.0.2/32, 10.0.0.3/24"
        );
        assert_eq!(
            crate::netdev::format_mac(&[0x02, 0, 0x5e, 0xab, 1, 0xff]),
            "02:00:5e:ab:01:ff"
        );
        assert_eq!(
            crate::netdev::parse_mac("02:00:5e:ab:01:ff"),
            Some([0x02, 0, 0x5e, 0xab, 1, 0xff])
        );
        assert_eq!(crate::netdev::parse_mac("02:00:5e:ab:01"), None);
    }

    #[test]
    fn a_missing_interface_is_named_in_the_error() {
        let mover = LocalMover::new(LocalSettings {
            interface: "xlb-absent0".to_owned(),
            ..settings()
        })
        .unwrap();
        match block_on(mover.release()).unwrap() {
            Err(LocalError::NoSuchInterface { interface }) => assert_eq!(interface, "xlb-absent0"),
            other => panic!("expected NoSuchInterface, got {other:?}"),
        }
    }
}
