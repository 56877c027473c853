//! The connection table's sweeper: removes entries that no longer serve a
//! connection (closed past their hold, expired half-open, idle past their
//! timeout), so that the LRU never has to make room by evicting an idle
//! live connection while dead ones remain. It runs on its own thread with
//! its own handles on the maps, at a bounded pace and in bounded memory
//! (a batch of keys at a time), so it never delays the daemon's loop.
//!
//! Each pass also takes the table's census (entries, open connections and
//! held SNAT tuples per backend) of what it leaves, and publishes it: the
//! status and the metrics are answered from that snapshot, never by a scan
//! of their own, whatever the table's size.
//!
//! It also carries out the orders that need a walk of the table: a
//! backend's sessions shut down (`on_down = "shutdown-sessions"`) are its
//! entries removed by the passes, at a quicker but still bounded pace, and
//! a pass asked for now (a drain's count) starts at once.

use std::{
    collections::HashMap as StdHashMap,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, Map, MapData};
use lb_common::{
    conntrack::{tuple_owner, TupleOwner},
    maps::{Flow, FlowKey, Settings, SETTINGS_READY},
};

use super::ConnectionCensus;
use tracing::{debug, info, warn};

/// A pass over the table starts this long after the last one ended (so the
/// census is at most this old, plus a pass: a table of a million entries
/// takes 20 s at the pace below).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// Entries looked at between pauses, and the pause: at most about 50,000
/// entries a second, a small share of one core.
const BATCH: usize = 5_000;
const PAUSE: Duration = Duration::from_millis(100);
/// The pause while sessions are being shut down: about 500,000 entries a
/// second, a million in two seconds, and still a pause after each batch.
const URGENT_PAUSE: Duration = Duration::from_millis(10);

/// Whether the entry `flow` under `key` is dead: nothing would miss it. The
/// same rule for both directions (their state bits are mirrored): what
/// frees a connection's SNAT tuple for any client, judged for an unknown
/// client (address 0). A half-closed connection, whose other side still
/// sends, is never dead before it falls silent.
#[must_use]
pub fn is_dead(key: &FlowKey, flow: &Flow, now_ns: u64, settings: &Settings) -> bool {
    let nobody = FlowKey {
        src_addr: 0,
        dst_addr: 0,
        src_port: 0,
        dst_port: 0,
        proto: key.proto,
        _pad: [0; 3],
    };
    tuple_owner(flow, &nobody, now_ns, settings, false) == TupleOwner::Free
}

/// A backend whose sessions are being shut down.
#[derive(Debug)]
struct Shutdown {
    /// Who asked, for the log: the service and backend names.
    label: String,
    /// Done at the end of the first pass that started after this number.
    placed_after_pass: u64,
    connections: usize,
}

#[derive(Debug, Default)]
struct State {
    /// The census of the last complete pass, and when it ended.
    census: Option<(Instant, ConnectionCensus)>,
    stop: bool,
    /// A pass is wanted now.
    now: bool,
    /// Passes started so far.
    passes: u64,
    /// By backend id.
    shutdowns: StdHashMap<u32, Shutdown>,
}

/// What the daemon and the sweeper share: the census it publishes, the
/// orders it is given, and the wake-up for both.
#[derive(Debug, Default)]
pub struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere mid-update of plain
        // counters: what is there is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The census of the last complete pass, and how long ago it ended.
    #[must_use]
    pub fn census(&self) -> Option<(Duration, ConnectionCensus)> {
        self.lock()
            .census
            .as_ref()
            .map(|(at, census)| (at.elapsed(), census.clone()))
    }

    /// Removes every entry of backend `id` from the table in the background
    /// (its connections are reset at their next segment), starting now; the
    /// sweeper logs how many there were under `label` when done.
    pub fn shut_down_sessions(&self, id: u32, label: String) {
        let mut state = self.lock();
        let placed_after_pass = state.passes;
        state.shutdowns.insert(
            id,
            Shutdown {
                label,
                placed_after_pass,
                connections: 0,
            },
        );
        state.now = true;
        self.wake.notify_all();
    }

    /// Stops shutting down backend `id`'s sessions (it is up again: its new
    /// connections must stay).
    pub fn cancel_shutdown(&self, id: u32) {
        self.lock().shutdowns.remove(&id);
    }

    /// Starts a pass now rather than at the next interval.
    pub fn sweep_now(&self) {
        self.lock().now = true;
        self.wake.notify_all();
    }

    /// Backends whose sessions are being shut down.
    fn doomed(&self) -> Vec<u32> {
        self.lock().shutdowns.keys().copied().collect()
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }

    /// Waits `duration`, or less if stopped or, with `early`, if a pass is
    /// wanted now; true once stopped.
    fn wait(&self, duration: Duration, early: bool) -> bool {
        let deadline = Instant::now() + duration;
        let mut state = self.lock();
        loop {
            if state.stop || (early && (state.now || !state.shutdowns.is_empty())) {
                return state.stop;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .wake
                .wait_timeout(state, left)
                .map_or_else(|e| e.into_inner().0, |(state, _)| state);
        }
    }

    /// A pass begins: its number.
    fn begin_pass(&self) -> u64 {
        let mut state = self.lock();
        state.now = false;
        state.passes += 1;
        state.passes
    }

    /// Pass `number` ended: publishes its census, completes the shutdowns
    /// placed before it began, and counts the connections it removed.
    fn end_pass(&self, number: u64, census: ConnectionCensus, removed: &StdHashMap<u32, usize>) {
        let mut state = self.lock();
        state.census = Some((Instant::now(), census));
        for (id, connections) in removed {
            if let Some(order) = state.shutdowns.get_mut(id) {
                order.connections += connections;
            }
        }
        let done: Vec<u32> = state
            .shutdowns
            .iter()
            .filter(|(_, order)| order.placed_after_pass < number)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some(order) = state.shutdowns.remove(&id) {
                info!(
                    backend = order.label,
                    connections = order.connections,
                    "shut down the backend's sessions"
                );
            }
        }
    }
}

/// The running sweeper; stops (and is joined) on drop.
pub struct Sweeper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Sweeper {
    /// Starts sweeping the maps with these ids (FLOWS, SETTINGS), publishing
    /// each pass's census in `shared` and taking its orders from there.
    pub fn start(flows_id: u32, settings_id: u32, shared: Arc<Shared>) -> std::io::Result<Self> {
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("xlb-sweeper".into())
            .spawn(move || run(flows_id, settings_id, &theirs))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.shared.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(flows_id: u32, settings_id: u32, shared: &Shared) {
    // Two handles on the table: one walks its keys while the other removes.
    let opened = MapData::from_id(flows_id)
        .and_then(|walk| Ok((walk, MapData::from_id(flows_id)?, MapData::from_id(settings_id)?)));
    let (walk, flows, settings) = match opened {
        Ok(maps) => maps,
        Err(e) => {
            warn!(error = %e, "the connection-table sweeper cannot open the maps; it does not run");
            return;
        }
    };
    let (Ok(walk), Ok(mut flows), Ok(settings)) = (
        HashMap::<MapData, FlowKey, Flow>::try_from(Map::LruHashMap(walk)),
        HashMap::<MapData, FlowKey, Flow>::try_from(Map::LruHashMap(flows)),
        Array::<MapData, Settings>::try_from(Map::Array(settings)),
    ) else {
        warn!("the connection-table sweeper's maps have unexpected types; it does not run");
        return;
    };
    // The first pass at once: the status has a census from the start.
    let mut pause = Duration::ZERO;
    while !shared.wait(pause, true) {
        pause = SWEEP_INTERVAL;
        let Ok(current) = settings.get(&0, 0) else {
            continue;
        };
        if current.flags & SETTINGS_READY == 0 {
            pause = Duration::from_millis(100);
            continue;
        }
        let number = shared.begin_pass();
        let Some(pass) = sweep(&walk, &mut flows, &current, shared) else {
            return;
        };
        if pass.removed > 0 {
            debug!(removed = pass.removed, "swept dead connection-table entries");
        }
        shared.end_pass(number, pass.census, &pass.shut_down);
    }
}

/// What a pass did and left.
#[derive(Debug, Default)]
struct Pass {
    removed: usize,
    census: ConnectionCensus,
    /// Connections removed by shutdown order, by backend id.
    shut_down: StdHashMap<u32, usize>,
}

/// One pass: walks the keys through `walk`, removes dead entries and those
/// of backends whose sessions are shut down through `flows` a batch at a
/// time, pausing between batches, and counts the rest. None when stopped
/// midway.
///
/// The walk's position is the last key it returned, and a hash map's
/// "next key" after a key that is gone starts over from the first: so each
/// batch's last key is judged only with the next batch, once the walk has
/// moved past it. If the program removes that key during a pause (its
/// connection closed, the LRU), the walk starts over: entries already
/// judged are judged again and the pass still ends, but under heavy churn
/// the far end of the table is swept less often (`BPF_MAP_LOOKUP_BATCH`,
/// whose cursor survives removals, would not be; aya 0.14 has no wrapper).
/// A walk that starts over shows as the first key met again: the census
/// then starts over too, so that no entry is counted twice.
fn sweep(
    walk: &HashMap<MapData, FlowKey, Flow>,
    flows: &mut HashMap<MapData, FlowKey, Flow>,
    settings: &Settings,
    shared: &Shared,
) -> Option<Pass> {
    let mut pass = Pass::default();
    let mut first: Option<FlowKey> = None;
    let mut batch: Vec<FlowKey> = Vec::with_capacity(BATCH + 1);
    for key in walk.keys().filter_map(Result::ok) {
        match first {
            None => first = Some(key),
            Some(first) if first == key => pass.census = ConnectionCensus::default(),
            Some(_) => {}
        }
        batch.push(key);
        if batch.len() <= BATCH {
            continue;
        }
        let walked_past = batch.len() - 1;
        let doomed = shared.doomed();
        remove_dead(flows, &batch[..walked_past], settings, &doomed, &mut pass);
        batch.drain(..walked_past);
        let pause = if doomed.is_empty() { PAUSE } else { URGENT_PAUSE };
        if shared.wait(pause, false) {
            return None;
        }
    }
    remove_dead(flows, &batch, settings, &shared.doomed(), &mut pass);
    Some(pass)
}

/// Removes the entries under `keys` that are dead now or belong to a
/// `doomed` backend, and counts the rest, in `pass`.
fn remove_dead(
    flows: &mut HashMap<MapData, FlowKey, Flow>,
    keys: &[FlowKey],
    settings: &Settings,
    doomed: &[u32],
    pass: &mut Pass,
) {
    let now = super::coarse_clock_ns();
    for key in keys {
        // Read right before the removal: the program may have just given
        // the tuple to a new connection, which must stay. (A take-over
        // between this read and the removal, microseconds apart, costs that
        // connection its reply entry until its next packet rebuilds it: see
        // `heal` in the program.)
        let Ok(flow) = flows.get(key, 0) else {
            continue;
        };
        if doomed.contains(&flow.backend_id) {
            let open = flow.direction == lb_common::maps::DIRECTION_FORWARD
                && flow.state & lb_common::maps::FLOW_CLOSING == 0;
            if flows.remove(key).is_ok() && open {
                *pass.shut_down.entry(flow.backend_id).or_insert(0) += 1;
            }
        } else if !is_dead(key, &flow, now, settings) {
            // Not dead: a reply entry among those left holds its tuple.
            pass.census.count(&flow, true);
        } else if flows.remove(key).is_ok() {
            pass.removed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::{
        headers::{IPPROTO_TCP, IPPROTO_UDP},
        maps::{
            Endpoints, DIRECTION_FORWARD, DIRECTION_REPLY, FLOW_BACKEND_TIME_WAIT, FLOW_CLOSING,
            FLOW_ESTABLISHED, FLOW_FIN_FROM_BACKEND, FLOW_FIN_FROM_CLIENT, FLOW_SEQ_KNOWN, MAX_SNAT_ADDRS,
        },
    };

    const SEC: u64 = 1_000_000_000;

    fn settings() -> Settings {
        Settings {
            snat_addrs: [0; MAX_SNAT_ADDRS],
            snat_addr_count: 1,
            snat_port_first: 20_000,
            snat_port_last: 29_999,
            local_port_first: 32_768,
            local_port_last: 60_999,
            hash_seed: 0,
            cookie_key: [0; 2],
            udp_timeout_ns: 30 * SEC,
            tcp_idle_timeout_ns: 7200 * SEC,
            tcp_handshake_timeout_ns: 10 * SEC,
            tcp_time_wait_ns: 65 * SEC,
            tcp_close_linger_ns: 2 * SEC,
            flags: SETTINGS_READY,
            _pad: 0,
        }
    }

    fn entry(direction: u8, state: u8, last_seen_ns: u64) -> Flow {
        Flow {
            rewrite: Endpoints {
                src_addr: 1,
                dst_addr: 2,
                src_port: 3,
                dst_port: 4,
            },
            direction,
            state,
            last_seen_ns,
            ..Flow::default()
        }
    }

    fn key(proto: u8) -> FlowKey {
        FlowKey {
            src_addr: 2,
            dst_addr: 1,
            src_port: 4,
            dst_port: 3,
            proto,
            _pad: [0; 3],
        }
    }

    #[test]
    fn a_shutdown_order_lasts_until_a_pass_that_began_after_it_and_a_recovery_cancels_it() {
        let shared = Shared::default();
        // A pass is under way when the order comes.
        let running = shared.begin_pass();
        shared.shut_down_sessions(7, "web/web1".into());
        shared.shut_down_sessions(8, "web/web2".into());
        assert_eq!(
            {
                let mut doomed = shared.doomed();
                doomed.sort_unstable();
                doomed
            },
            [7, 8]
        );
        // The pass under way may have walked past some of its entries.
        shared.end_pass(running, ConnectionCensus::default(), &StdHashMap::from([(7, 2)]));
        assert_eq!(shared.doomed().len(), 2, "not done by a pass begun before");
        // Backend 8 is up again before the next pass: its new connections stay.
        shared.cancel_shutdown(8);
        let next = shared.begin_pass();
        shared.end_pass(next, ConnectionCensus::default(), &StdHashMap::from([(7, 3)]));
        assert!(shared.doomed().is_empty());
        assert!(shared.census().is_some(), "each pass publishes its census");
    }

    #[test]
    fn orders_and_a_pass_asked_for_now_end_the_wait_between_passes_and_stop_ends_any() {
        let shared = Arc::new(Shared::default());
        let waiting = |early: bool| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let started = Instant::now();
                let stopped = shared.wait(Duration::from_secs(60), early);
                (stopped, started.elapsed())
            })
        };
        for order in [
            Box::new(|s: &Shared| s.sweep_now()) as Box<dyn Fn(&Shared)>,
            Box::new(|s: &Shared| s.shut_down_sessions(1, "a/b".into())),
        ] {
            let waiter = waiting(true);
            std::thread::sleep(Duration::from_millis(50));
            order(&shared);
            let (stopped, waited) = waiter.join().unwrap();
            assert!(!stopped && waited < Duration::from_secs(60));
            shared.begin_pass();
            shared.cancel_shutdown(1);
        }
        let waiter = waiting(false);
        std::thread::sleep(Duration::from_millis(50));
        shared.stop();
        assert!(waiter.join().unwrap().0, "a stop ends a pause within a pass");
    }

    #[test]
    fn only_entries_nothing_would_miss_are_dead() {
        let s = settings();
        let live = FLOW_SEQ_KNOWN | FLOW_ESTABLISHED;
        let closed =
            live | FLOW_CLOSING | FLOW_FIN_FROM_BACKEND | FLOW_BACKEND_TIME_WAIT | FLOW_FIN_FROM_CLIENT;
        let tcp = key(IPPROTO_TCP);
        // An idle live connection stays, both entries.
        for direction in [DIRECTION_FORWARD, DIRECTION_REPLY] {
            assert!(!is_dead(&tcp, &entry(direction, live, 0), 3600 * SEC, &s));
        }
        // A closed one after the hold; a half-closed one once silent that long.
        for direction in [DIRECTION_FORWARD, DIRECTION_REPLY] {
            assert!(!is_dead(&tcp, &entry(direction, closed, 0), 60 * SEC, &s));
            assert!(is_dead(&tcp, &entry(direction, closed, 0), 66 * SEC, &s));
            let half = live | FLOW_CLOSING | FLOW_FIN_FROM_CLIENT;
            assert!(!is_dead(&tcp, &entry(direction, half, 0), 60 * SEC, &s));
            assert!(is_dead(&tcp, &entry(direction, half, 0), 66 * SEC, &s));
        }
        // A half-open one after the handshake timeout.
        assert!(!is_dead(&tcp, &entry(DIRECTION_REPLY, 0, 0), 9 * SEC, &s));
        assert!(is_dead(&tcp, &entry(DIRECTION_REPLY, 0, 0), 11 * SEC, &s));
        assert!(is_dead(
            &tcp,
            &entry(DIRECTION_FORWARD, FLOW_SEQ_KNOWN, 0),
            11 * SEC,
            &s
        ));
        // UDP after its timeout.
        let udp = key(IPPROTO_UDP);
        assert!(!is_dead(&udp, &entry(DIRECTION_FORWARD, 0, 0), 29 * SEC, &s));
        assert!(is_dead(&udp, &entry(DIRECTION_REPLY, 0, 0), 31 * SEC, &s));
    }
}
