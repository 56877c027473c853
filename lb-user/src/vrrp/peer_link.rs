//! The peer link: a TCP connection from this node to each xlb peer. It
//! carries nothing after a greeting; its use is that when a peer's process
//! dies (kill -9, crash, OOM), that peer's kernel closes the connection at
//! once, so a backup learns the master is gone in a round trip instead of
//! three missed advertisements. A network partition closes nothing, and
//! the advertisement timers still decide.
//!
//! Each node listens on `source:port` and connects to every `peer:port`; a
//! close of an outbound connection (after a greeting from the same VRID) is
//! reported. Peers that do not speak it (keepalived) just refuse, and the
//! retries stay quiet.
//!
//! Since a close makes the backup take over at once, a reset forged by a
//! third party would move the floating IP. With a key (`peer_link_key_file`)
//! every segment of the link is signed with TCP-MD5 (RFC 2385): the kernel
//! drops segments, resets included, that do not carry the signature.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::AsRawFd,
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::mpsc,
    task::JoinSet,
    time::{sleep, timeout},
};
use tracing::{debug, info};

/// What the link reports to the VRRP driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerLinkEvent {
    /// Connected; the peer's floating-IP interface has MAC `mac` (when it
    /// holds the IP itself, with the local mover).
    Up { peer: Ipv4Addr, mac: Option<[u8; 6]> },
    /// The peer's end closed the connection: its process is gone.
    Closed(Ipv4Addr),
    /// The connection timed out (keepalive): the peer's host, or the path
    /// to it, is gone. Not a sign that its process died; reconnecting.
    Lost(Ipv4Addr),
}

const GREETING_PREFIX: &str = "XLB-PEER-LINK/1 vrid=";
const GREETING_MAX: usize = 80;
const GREETING_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// What a node says about itself when the link opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Greeting {
    pub vrid: u8,
    pub mac: Option<[u8; 6]>,
}

impl Greeting {
    fn encode(self) -> Vec<u8> {
        let mac = self
            .mac
            .map_or_else(|| "-".to_owned(), |m| crate::netdev::format_mac(&m));
        format!("{GREETING_PREFIX}{} mac={mac}\n", self.vrid).into_bytes()
    }

    fn decode(line: &str) -> Option<Self> {
        let rest = line.strip_prefix(GREETING_PREFIX)?;
        let (vrid, mac) = rest.split_once(" mac=")?;
        let mac = match mac {
            "-" => None,
            text => Some(crate::netdev::parse_mac(text)?),
        };
        Some(Self {
            vrid: vrid.parse().ok()?,
            mac,
        })
    }
}

/// Reads the other side's greeting (one bounded line) and checks it is for
/// our VRID; returns its MAC.
async fn expect_greeting(stream: &mut TcpStream, vrid: u8) -> std::io::Result<Option<[u8; 6]>> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let read = async {
        let mut line = Vec::new();
        let mut byte = [0_u8; 1];
        while line.len() < GREETING_MAX {
            stream.read_exact(&mut byte).await?;
            if byte[0] == b'\n' {
                return Ok(line);
            }
            line.push(byte[0]);
        }
        Err(invalid("greeting too long"))
    };
    let line = timeout(GREETING_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no greeting"))??;
    match std::str::from_utf8(&line).ok().and_then(Greeting::decode) {
        Some(greeting) if greeting.vrid == vrid => Ok(greeting.mac),
        _ => Err(invalid("not an xlb peer link for this VRID")),
    }
}

/// How a link ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// FIN or RST from the peer's kernel: its process closed or died.
    Closed,
    /// Keepalive time-out or unreachable: nothing is known of the process.
    Lost,
}

/// Probes an idle link, so that a host that vanished without a word (power
/// loss, partition) ends it within a few seconds instead of never.
fn keep_alive(stream: &TcpStream) -> std::io::Result<()> {
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(2))
        .with_interval(Duration::from_secs(1))
        .with_retries(3);
    socket2::SockRef::from(stream).set_tcp_keepalive(&probes)
}

/// Waits until the link ends. Anything the other side sends is ignored.
async fn wait_closed(stream: &mut TcpStream) -> Ending {
    let mut sink = [0_u8; 64];
    loop {
        match stream.read(&mut sink).await {
            Ok(0) => return Ending::Closed,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ending::Closed,
            Err(_) => return Ending::Lost,
            Ok(_) => {}
        }
    }
}

/// The longest TCP-MD5 key Linux takes (TCP_MD5SIG_MAXKEYLEN).
pub const MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` of <linux/tcp.h>.
#[repr(C)]
struct TcpMd5Sig {
    address: libc::sockaddr_storage,
    flags: u8,
    prefix_len: u8,
    key_len: u16,
    ifindex: i32,
    key: [u8; MAX_KEY_LEN],
}

/// Makes the kernel sign every segment `socket` exchanges with `peer` with
/// `key`, and drop the ones from `peer` that are not signed with it. On a
/// listener, the accepted connections inherit it.
fn sign_with(socket: &impl AsRawFd, peer: Ipv4Addr, key: &[u8]) -> std::io::Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("a TCP-MD5 key has 1 to {MAX_KEY_LEN} bytes"),
        ));
    }
    // SAFETY: all zeros is a valid tcp_md5sig.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    let address = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(peer.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a sockaddr_in fits in a sockaddr_storage, which is aligned for it.
    unsafe {
        std::ptr::write(
            std::ptr::from_mut(&mut sig.address).cast::<libc::sockaddr_in>(),
            address,
        );
    }
    sig.key_len = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: `sig` is a valid tcp_md5sig of the length given.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            std::ptr::from_ref(&sig).cast(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Where the link runs and how it is secured.
#[derive(Clone, Debug)]
pub struct LinkSettings {
    /// This node's address (the VRRP source address).
    pub source: Ipv4Addr,
    pub peers: Vec<Ipv4Addr>,
    pub port: u16,
    pub greeting: Greeting,
    /// TCP-MD5 key shared by the peers; None: unsigned.
    pub key: Option<Arc<[u8]>>,
}

/// Binds the listener now, so that a port in use fails the start.
pub async fn bind(settings: &LinkSettings) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    if let Some(key) = &settings.key {
        for peer in &settings.peers {
            sign_with(&socket, *peer, key)?;
        }
    }
    socket.bind(SocketAddr::V4(SocketAddrV4::new(settings.source, settings.port)))?;
    socket.listen(16)
}

/// Runs the link until the returned future is dropped.
pub async fn run(listener: TcpListener, settings: LinkSettings, events: mpsc::Sender<PeerLinkEvent>) {
    let mut tasks = JoinSet::new();
    tasks.spawn(accept_loop(listener, settings.peers.clone(), settings.greeting));
    for peer in settings.peers.clone() {
        tasks.spawn(connect_loop(settings.clone(), peer, events.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn accept_loop(listener: TcpListener, peers: Vec<Ipv4Addr>, greeting: Greeting) {
    let mut held = JoinSet::new();
    loop {
        let Ok((mut stream, from)) = listener.accept().await else {
            sleep(RETRY_MIN).await;
            continue;
        };
        let allowed = matches!(from, SocketAddr::V4(v4) if peers.contains(v4.ip()));
        if !allowed {
            debug!(%from, "peer link: refused a connection from a non-peer");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let _ = keep_alive(&stream);
        held.spawn(async move {
            if stream.write_all(&greeting.encode()).await.is_err()
                || expect_greeting(&mut stream, greeting.vrid).await.is_err()
            {
                return;
            }
            // Held open: our own death closes it, which is the point.
            let _ = wait_closed(&mut stream).await;
        });
        while held.try_join_next().is_some() {}
    }
}

async fn connect(settings: &LinkSettings, peer: Ipv4Addr) -> std::io::Result<(TcpStream, Option<[u8; 6]>)> {
    let greeting = settings.greeting;
    let socket = TcpSocket::new_v4()?;
    if let Some(key) = &settings.key {
        sign_with(&socket, peer, key)?;
    }
    socket.bind(SocketAddr::V4(SocketAddrV4::new(settings.source, 0)))?;
    let mut stream = timeout(
        GREETING_TIMEOUT,
        socket.connect(SocketAddr::V4(SocketAddrV4::new(peer, settings.port))),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    keep_alive(&stream)?;
    stream.write_all(&greeting.encode()).await?;
    let mac = expect_greeting(&mut stream, greeting.vrid).await?;
    Ok((stream, mac))
}

async fn connect_loop(settings: LinkSettings, peer: Ipv4Addr, events: mpsc::Sender<PeerLinkEvent>) {
    let mut retry = RETRY_MIN;
    loop {
        match connect(&settings, peer).await {
            Ok((mut stream, mac)) => {
                retry = RETRY_MIN;
                info!(%peer, "peer link up");
                if events.send(PeerLinkEvent::Up { peer, mac }).await.is_err() {
                    return;
                }
                let event = match wait_closed(&mut stream).await {
                    Ending::Closed => {
                        info!(%peer, "peer link closed by the peer");
                        PeerLinkEvent::Closed(peer)
                    }
                    Ending::Lost => {
                        info!(%peer, "peer link lost (no answer to keepalives)");
                        PeerLinkEvent::Lost(peer)
                    }
                };
                if events.send(event).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                debug!(%peer, error = %e, "peer link: cannot connect");
                sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::within;

    fn node(
        here: Ipv4Addr,
        there: Ipv4Addr,
        port: u16,
        vrid: u8,
        mac: Option<[u8; 6]>,
        key: Option<&str>,
    ) -> LinkSettings {
        LinkSettings {
            source: here,
            peers: vec![there],
            port,
            greeting: Greeting { vrid, mac },
            key: key.map(|k| Arc::from(k.as_bytes())),
        }
    }

    /// Starts both ends (each must see the other as a peer: two loopback
    /// addresses); returns their tasks and the first node's events.
    async fn pair(
        here: LinkSettings,
        there: LinkSettings,
    ) -> (
        tokio::task::JoinHandle<()>,
        tokio::task::JoinHandle<()>,
        mpsc::Receiver<PeerLinkEvent>,
    ) {
        let listener_here = bind(&here).await.unwrap();
        let listener_there = bind(&there).await.unwrap();
        let (tx_here, rx_here) = mpsc::channel(8);
        let (tx_there, _rx_there) = mpsc::channel(8);
        (
            tokio::spawn(run(listener_here, here, tx_here)),
            tokio::spawn(run(listener_there, there, tx_there)),
            rx_here,
        )
    }

    /// A free port on both addresses (the nodes share one port number).
    async fn free_port(a: Ipv4Addr) -> u16 {
        tokio::net::TcpListener::bind((a, 0))
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// With or without a key: the dying peer's kernel signs its close too.
    #[tokio::test]
    async fn a_peer_process_that_goes_away_is_reported_at_once() {
        let here = Ipv4Addr::LOCALHOST;
        for (there, key) in [
            (Ipv4Addr::new(127, 0, 0, 2), None),
            (Ipv4Addr::new(127, 0, 0, 4), Some("correct horse battery staple")),
        ] {
            let port = free_port(here).await;
            let mac = [2, 0, 0, 0, 0, 0x42];
            let (node_here, node_there, mut rx_here) = pair(
                node(here, there, port, 50, None, key),
                node(there, here, port, 50, Some(mac), key),
            )
            .await;
            assert_eq!(
                within("the link to the peer", rx_here.recv()).await,
                Some(PeerLinkEvent::Up {
                    peer: there,
                    mac: Some(mac)
                }),
                "key {key:?}"
            );
            // "Kill" the other node: its tasks and sockets go away.
            node_there.abort();
            let _ = within("the aborted peer's end", node_there).await;
            assert_eq!(
                within("the closed link's report", rx_here.recv()).await,
                Some(PeerLinkEvent::Closed(there)),
                "key {key:?}"
            );
            node_here.abort();
        }
    }

    #[tokio::test]
    async fn peers_with_different_keys_or_one_unsigned_never_link() {
        let (here, there) = (Ipv4Addr::LOCALHOST, Ipv4Addr::new(127, 0, 0, 5));
        for (key_here, key_there) in [(Some("one key"), Some("another key")), (Some("one key"), None)] {
            let port = free_port(here).await;
            let (node_here, node_there, mut rx_here) = pair(
                node(here, there, port, 50, None, key_here),
                node(there, here, port, 50, None, key_there),
            )
            .await;
            let nothing = timeout(Duration::from_millis(500), rx_here.recv()).await;
            assert!(
                nothing.is_err(),
                "{key_here:?} / {key_there:?} linked: {nothing:?}"
            );
            node_here.abort();
            node_there.abort();
        }
    }

    #[test]
    fn a_key_longer_than_linux_takes_is_refused() {
        let socket = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        assert!(sign_with(&socket, Ipv4Addr::LOCALHOST, &[7; MAX_KEY_LEN]).is_ok());
        assert!(sign_with(&socket, Ipv4Addr::LOCALHOST, &[7; MAX_KEY_LEN + 1]).is_err());
        assert!(sign_with(&socket, Ipv4Addr::LOCALHOST, &[]).is_err());
    }

    #[test]
    fn greetings_round_trip_and_junk_is_refused() {
        for mac in [None, Some([0x02, 0xab, 0, 0xff, 0x10, 0x01])] {
            let greeting = Greeting { vrid: 50, mac };
            let line = String::from_utf8(greeting.encode()).unwrap();
            assert_eq!(Greeting::decode(line.trim_end()), Some(greeting));
        }
        for junk in [
            "HTTP/1.1 200 OK",
            "XLB-PEER-LINK/1 vrid=50",
            "XLB-PEER-LINK/1 vrid=50 mac=zz:00:00:00:00:00",
            "XLB-PEER-LINK/1 vrid=300 mac=-",
        ] {
            assert_eq!(Greeting::decode(junk), None, "{junk}");
        }
    }

    #[tokio::test]
    async fn a_listener_for_another_vrid_is_not_a_peer() {
        let (here, there) = (Ipv4Addr::LOCALHOST, Ipv4Addr::new(127, 0, 0, 3));
        let port = free_port(here).await;
        let (node_here, node_there, mut rx_here) = pair(
            node(here, there, port, 50, None, None),
            node(there, here, port, 51, None, None),
        )
        .await;
        let nothing = timeout(Duration::from_millis(500), rx_here.recv()).await;
        assert!(nothing.is_err(), "no link across VRIDs: {nothing:?}");
        node_here.abort();
        node_there.abort();
    }
}
