//! A steady stream of new connections to a service, for measuring how long
//! a failover interrupts it: each attempt is a fresh TCP connection and an
//! HTTP request with short time-outs, so a lost SYN costs one attempt, not
//! the kernel's one-second retransmission.

use std::{
    net::{SocketAddr, SocketAddrV4, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::netns::Netns;

/// One attempt.
#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    pub started: Instant,
    pub finished: Instant,
    pub ok: bool,
}

pub struct ConnectionProbe {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<std::io::Result<Vec<Attempt>>>,
}

/// Time-outs of one attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(100);
const ANSWER_TIMEOUT: Duration = Duration::from_millis(500);

/// One attempt: a new connection to `target` and a request, with the
/// probe's time-outs. Call it from a thread inside the client's namespace.
#[must_use]
pub fn attempt(target: SocketAddrV4) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&SocketAddr::V4(target), CONNECT_TIMEOUT) else {
        return false;
    };
    if stream.set_read_timeout(Some(ANSWER_TIMEOUT)).is_err() {
        return false;
    }
    crate::http::get(&mut stream).is_ok()
}

impl ConnectionProbe {
    /// Starts attempts from `ns` to `target`, one every `pace` at most.
    pub fn start(ns: &Netns, target: SocketAddrV4, pace: Duration) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = ns.spawn(move || {
            let mut attempts = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                let ok = attempt(target);
                let finished = Instant::now();
                attempts.push(Attempt {
                    started,
                    finished,
                    ok,
                });
                if let Some(rest) = pace.checked_sub(finished - started) {
                    std::thread::sleep(rest);
                }
            }
            attempts
        })?;
        Ok(Self { stop, handle })
    }

    /// As [`ConnectionProbe::start`], but each attempt runs on a thread of
    /// its own, one started every `pace` whether or not the previous ones
    /// have finished: an attempt stuck in its connect time-out (a SYN sent
    /// to a node that is gone) does not hold the next back, so a recovery
    /// shows within `pace` instead of within the time-out.
    pub fn start_overlapping(ns: &Netns, target: SocketAddrV4, pace: Duration) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = ns.spawn(move || {
            let (done, results) = mpsc::channel();
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let done = done.clone();
                // A thread inherits the network namespace of the one that
                // spawns it.
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let ok = attempt(target);
                    let _ = done.send(Attempt {
                        started,
                        finished: Instant::now(),
                        ok,
                    });
                });
                next = (next + pace).max(Instant::now());
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            drop(done);
            // Every attempt ends within its time-outs.
            let mut attempts: Vec<Attempt> = results.iter().collect();
            attempts.sort_by_key(|a| a.finished);
            attempts
        })?;
        Ok(Self { stop, handle })
    }

    /// Stops and returns every attempt, in the order they finished.
    pub fn stop(self) -> anyhow::Result<Vec<Attempt>> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.join() {
            Ok(result) => Ok(result?),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// How a fault at `fault` interrupted the stream.
#[derive(Clone, Copy, Debug)]
pub struct Outage {
    /// From the fault to the end of the first successful attempt started after it.
    pub to_first_success: Duration,
    /// From the last success finished before the fault to that first success.
    pub gap: Duration,
    pub failed_attempts: usize,
}

/// None if no attempt started after `fault` succeeded. `attempts` in the
/// order they finished, as [`ConnectionProbe::stop`] returns them.
#[must_use]
pub fn outage(attempts: &[Attempt], fault: Instant) -> Option<Outage> {
    let first = attempts.iter().find(|a| a.started >= fault && a.ok)?;
    let last_before = attempts
        .iter()
        .filter(|a| a.ok && a.finished <= fault)
        .map(|a| a.finished)
        .max()
        .unwrap_or(fault);
    Some(Outage {
        to_first_success: first.finished.saturating_duration_since(fault),
        gap: first.finished.saturating_duration_since(last_before),
        failed_attempts: attempts
            .iter()
            .filter(|a| !a.ok && a.started >= last_before && a.started < first.started)
            .count(),
    })
}
