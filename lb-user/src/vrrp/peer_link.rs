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
    Up(Ipv4Addr),
    /// The peer's end closed the connection: its process is gone.
    Closed(Ipv4Addr),
}

const GREETING_PREFIX: &[u8] = b"XLB-PEER-LINK/1 vrid=";
const GREETING_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

fn greeting(vrid: u8) -> Vec<u8> {
    let mut line = GREETING_PREFIX.to_vec();
    line.extend_from_slice(format!("{vrid}\n").as_bytes());
    line
}

/// Reads the other side's greeting and checks it is for our VRID.
async fn expect_greeting(stream: &mut TcpStream, vrid: u8) -> std::io::Result<()> {
    let wanted = greeting(vrid);
    let mut got = vec![0_u8; wanted.len()];
    timeout(GREETING_TIMEOUT, stream.read_exact(&mut got))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no greeting"))??;
    if got != wanted {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not an xlb peer link for this VRID",
        ));
    }
    Ok(())
}

/// Waits until the other side closes (EOF or reset). Anything it sends is
/// ignored.
async fn wait_closed(stream: &mut TcpStream) {
    let mut sink = [0_u8; 64];
    loop {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => return,
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
    vrid: u8,
    events: mpsc::Sender<PeerLinkEvent>,
) {
    let mut tasks = JoinSet::new();
    tasks.spawn(accept_loop(listener, peers.clone(), vrid));
    for peer in peers {
        tasks.spawn(connect_loop(source, peer, port, vrid, events.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn accept_loop(listener: TcpListener, peers: Vec<Ipv4Addr>, vrid: u8) {
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
        held.spawn(async move {
            if stream.write_all(&greeting(vrid)).await.is_err()
                || expect_greeting(&mut stream, vrid).await.is_err()
            {
                return;
            }
            // Held open: our own death closes it, which is the point.
            wait_closed(&mut stream).await;
        });
        while held.try_join_next().is_some() {}
    }
}

async fn connect(source: Ipv4Addr, peer: Ipv4Addr, port: u16, vrid: u8) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
    let mut stream = timeout(
        GREETING_TIMEOUT,
        socket.connect(SocketAddr::V4(SocketAddrV4::new(peer, port))),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    stream.write_all(&greeting(vrid)).await?;
    expect_greeting(&mut stream, vrid).await?;
    Ok(stream)
}

async fn connect_loop(
    source: Ipv4Addr,
    peer: Ipv4Addr,
    port: u16,
    vrid: u8,
    events: mpsc::Sender<PeerLinkEvent>,
) {
    let mut retry = RETRY_MIN;
    loop {
        match connect(source, peer, port, vrid).await {
            Ok(mut stream) => {
                retry = RETRY_MIN;
                info!(%peer, "peer link up");
                if events.send(PeerLinkEvent::Up(peer)).await.is_err() {
                    return;
                }
                wait_closed(&mut stream).await;
                info!(%peer, "peer link closed by the peer");
                if events.send(PeerLinkEvent::Closed(peer)).await.is_err() {
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
        let node_here = tokio::spawn(run(listener_here, here, vec![there], port, 50, tx_here));
        let node_there = tokio::spawn(run(listener_there, there, vec![here], port, 50, tx_there));
        assert_eq!(rx_here.recv().await, Some(PeerLinkEvent::Up(there)));
        // "Kill" the other node: its tasks and sockets go away.
        node_there.abort();
        let _ = node_there.await;
        assert_eq!(rx_here.recv().await, Some(PeerLinkEvent::Closed(there)));
        node_here.abort();
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
        let node_here = tokio::spawn(run(listener_here, here, vec![there], port, 50, tx_here));
        let node_there = tokio::spawn(run(listener_there, there, vec![here], port, 51, tx_there));
        let nothing = timeout(Duration::from_millis(500), rx_here.recv()).await;
        assert!(nothing.is_err(), "no link across VRIDs: {nothing:?}");
        node_here.abort();
        node_there.abort();
    }
}
