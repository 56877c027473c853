//! HTTP serving with bounds, shared by the admin API and the metrics
//! endpoint: a cap on the connections served at once (more are closed on
//! accept), a time limit for a request's headers, a deadline for a whole
//! connection, one request per connection, and a grace period for requests
//! in flight at shutdown. A client that connects and sends nothing, or
//! never stops reading, cannot hold the daemon's sockets or tasks.

use std::{future::Future, io, net::SocketAddr, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::watch,
    task::JoinSet,
};
use tracing::{debug, info, warn};

/// The bounds of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// A client must send its request headers within this time.
    pub header_read_timeout: Duration,
    /// A connection is closed after this long, whatever it is doing.
    pub connection_deadline: Duration,
    /// On shutdown, requests in flight get this long to finish.
    pub shutdown_grace: Duration,
}

impl Limits {
    /// The daemon's: 32 connections, 10 s for the headers, 60 s for a
    /// connection, 2 s of grace.
    pub const DEFAULT: Self = Self {
        max_connections: 32,
        header_read_timeout: Duration::from_secs(10),
        connection_deadline: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(2),
    };
}

/// Serves TCP connections accepted on `listener` until `shutdown`
/// completes, each with the router `for_peer` makes for its peer; then
/// gives requests in flight the grace period. `what` names the server in
/// logs. Errors on single connections are logged, never returned.
pub async fn serve_tcp(
    listener: TcpListener,
    what: &'static str,
    limits: Limits,
    for_peer: impl Fn(SocketAddr) -> Router,
    shutdown: impl Future<Output = ()>,
) {
    let (listening, for_peer) = (&listener, &for_peer);
    let accept = move || async move {
        let (stream, addr) = listening.accept().await?;
        // Best effort: only latency is at stake.
        let _ = stream.set_nodelay(true);
        Ok(Some((stream, for_peer(addr), addr.to_string())))
    };
    let draining = accept_until(what, limits, accept, shutdown).await;
    drop(listener);
    draining.finish().await;
}

/// A connection `accept` took: the stream, the router that serves it, and
/// its peer's name for logs; None: refused (the acceptor said why).
pub type Accepted<S> = io::Result<Option<(S, Router, String)>>;

/// Serves the connections `accept` takes, each on a task of its own, until
/// `shutdown` completes; beyond the cap a new connection is closed at once.
/// Returns the connections still open, for the caller to `finish` once it
/// has stopped listening (so that new clients are refused at once).
pub async fn accept_until<S, F>(
    what: &'static str,
    limits: Limits,
    mut accept: impl FnMut() -> F,
    shutdown: impl Future<Output = ()>,
) -> Draining
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Future<Output = Accepted<S>>,
{
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, router, peer) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = accept() => match accepted {
                Ok(Some(accepted)) => accepted,
                Ok(None) => continue,
                Err(e) => { accept_failed(what, &e).await; continue; }
            },
        };
        if connections.len() >= limits.max_connections {
            warn!(%peer, "{what}: {} connections open, closing a new one", limits.max_connections);
            continue;
        }
        connections.spawn(serve_connection(
            stream,
            router,
            what,
            peer,
            limits,
            stopped.clone(),
        ));
    }
    Draining {
        what,
        limits,
        stop,
        connections,
    }
}

/// The connections a server had open when it stopped accepting.
pub struct Draining {
    what: &'static str,
    limits: Limits,
    stop: watch::Sender<bool>,
    connections: JoinSet<()>,
}

impl Draining {
    /// Tells every connection to finish its request in flight and close,
    /// waits the grace period, then aborts what is left.
    pub async fn finish(mut self) {
        let what = self.what;
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(self.limits.shutdown_grace, async {
            while self.connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            debug!(
                connections = self.connections.len(),
                "{what}: closing connections still open after the grace period"
            );
        }
        // Dropping the JoinSet aborts what is left.
        info!("{what} stopped");
    }
}

/// Accept fails on resource exhaustion (EMFILE, ENOBUFS); retrying at once
/// would spin, so wait a little and let connections close.
async fn accept_failed(what: &'static str, error: &io::Error) {
    warn!(error = %error, "{what}: accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Serves one connection with `router` within `limits`; `peer` names the
/// client in logs. On `stopped`, the request in flight finishes and the
/// connection closes.
async fn serve_connection<I>(
    io: I,
    router: Router,
    what: &'static str,
    peer: String,
    limits: Limits,
    mut stopped: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // One request per connection: an idle keep-alive connection would
        // hold one of the connection slots.
        .keep_alive(false);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let served = tokio::time::timeout(limits.connection_deadline, async {
        tokio::select! {
            result = connection.as_mut() => result,
            // The guard `wait_for` returns is not Send: drop it at once.
            () = async { drop(stopped.wait_for(|stop| *stop).await) } => {
                connection.as_mut().graceful_shutdown();
                connection.as_mut().await
            }
        }
    })
    .await;
    match served {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(%peer, error = %e, "{what}: connection error"),
        Err(_) => debug!(%peer, "{what}: connection closed after {:?}", limits.connection_deadline),
    }
}
