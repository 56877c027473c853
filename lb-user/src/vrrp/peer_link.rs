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

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
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

/// Binds the listener now, so that a port in use fails the start.
pub async fn bind(source: Ipv4Addr, port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, port)))?;
    socket.listen(16)
}

/// Runs the link until the returned future is dropped.
pub async fn run(
    listener: TcpListener,
    source: Ipv4Addr,
    peers: Vec<Ipv4Addr>,
    port: u16,
    greeting: Greeting,
    events: mpsc::Sender<PeerLinkEvent>,
) {
    let mut tasks = JoinSet::new();
    tasks.spawn(accept_loop(listener, peers.clone(), greeting));
    for peer in peers {
        tasks.spawn(connect_loop(source, peer, port, greeting, events.clone()));
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

async fn connect(
    source: Ipv4Addr,
    peer: Ipv4Addr,
    port: u16,
    greeting: Greeting,
) -> std::io::Result<(TcpStream, Option<[u8; 6]>)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
    let mut stream = timeout(
        GREETING_TIMEOUT,
        socket.connect(SocketAddr::V4(SocketAddrV4::new(peer, port))),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    keep_alive(&stream)?;
    stream.write_all(&greeting.encode()).await?;
    let mac = expect_greeting(&mut stream, greeting.vrid).await?;
    Ok((stream, mac))
}

async fn connect_loop(
    source: Ipv4Addr,
    peer: Ipv4Addr,
    port: u16,
    greeting: Greeting,
    events: mpsc::Sender<PeerLinkEvent>,
) {
    let mut retry = RETRY_MIN;
    loop {
        match connect(source, peer, port, greeting).await {
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

    #[tokio::test]
    async fn a_peer_process_that_goes_away_is_reported_at_once() {
        let here = Ipv4Addr::LOCALHOST;
        // Each side must see the other as a peer: use two loopback addresses.
        let there = Ipv4Addr::new(127, 0, 0, 2);
        let listener_here = bind(here, 0).await.unwrap();
        let port = listener_here.local_addr().unwrap().port();
        let listener_there = bind(there, port).await.unwrap();
        let (tx_here, mut rx_here) = mpsc::channel(8);
        let (tx_there, _rx_there) = mpsc::channel(8);
        let mac = [2, 0, 0, 0, 0, 0x42];
        let greet = |mac| Greeting { vrid: 50, mac };
        let node_here = tokio::spawn(run(listener_here, here, vec![there], port, greet(None), tx_here));
        let node_there = tokio::spawn(run(
            listener_there,
            there,
            vec![here],
            port,
            greet(Some(mac)),
            tx_there,
        ));
        assert_eq!(
            within("the link to the peer", rx_here.recv()).await,
            Some(PeerLinkEvent::Up {
                peer: there,
                mac: Some(mac)
            })
        );
        // "Kill" the other node: its tasks and sockets go away.
        node_there.abort();
        let _ = within("the aborted peer's end", node_there).await;
        assert_eq!(
            within("the closed link's report", rx_here.recv()).await,
            Some(PeerLinkEvent::Closed(there))
        );
        node_here.abort();
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
        let here = Ipv4Addr::LOCALHOST;
        let there = Ipv4Addr::new(127, 0, 0, 3);
        let listener_here = bind(here, 0).await.unwrap();
        let port = listener_here.local_addr().unwrap().port();
        let listener_there = bind(there, port).await.unwrap();
        let (tx_here, mut rx_here) = mpsc::channel(8);
        let (tx_there, _rx_there) = mpsc::channel(8);
        let greet = |vrid| Greeting { vrid, mac: None };
        let node_here = tokio::spawn(run(listener_here, here, vec![there], port, greet(50), tx_here));
        let node_there = tokio::spawn(run(listener_there, there, vec![here], port, greet(51), tx_there));
        let nothing = timeout(Duration::from_millis(500), rx_here.recv()).await;
        assert!(nothing.is_err(), "no link across VRIDs: {nothing:?}");
        node_here.abort();
        node_there.abort();
    }
}
