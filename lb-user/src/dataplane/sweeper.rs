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

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, Map, MapData};
use lb_common::{
    conntrack::{tuple_owner, TupleOwner},
    maps::{Flow, FlowKey, Settings, SETTINGS_READY},
};

use super::ConnectionCensus;
use tracing::{debug, warn};

/// A pass over the table starts this long after the last one ended (so the
/// census is at most this old, plus a pass: a table of a million entries
/// takes 20 s at the pace below).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// Entries looked at between pauses, and the pause: at most about 50,000
/// entries a second, a small share of one core.
const BATCH: usize = 5_000;
const PAUSE: Duration = Duration::from_millis(100);

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

/// The census of the last complete pass, and when it ended.
pub type Census = Arc<Mutex<Option<(Instant, ConnectionCensus)>>>;

/// The running sweeper; stops (and is joined) on drop.
pub struct Sweeper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sweeper {
    /// Starts sweeping the maps with these ids (FLOWS, SETTINGS), publishing
    /// each pass's census in `census`.
    pub fn start(flows_id: u32, settings_id: u32, census: Census) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("xlb-sweeper".into())
            .spawn(move || run(flows_id, settings_id, &census, &flag))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(flows_id: u32, settings_id: u32, census: &Census, stop: &AtomicBool) {
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
    while !sleep_unless_stopped(pause, stop) {
        pause = SWEEP_INTERVAL;
        let Ok(current) = settings.get(&0, 0) else {
            continue;
        };
        if current.flags & SETTINGS_READY == 0 {
            pause = Duration::from_millis(100);
            continue;
        }
        let Some(pass) = sweep(&walk, &mut flows, &current, stop) else {
            return;
        };
        if pass.removed > 0 {
            debug!(removed = pass.removed, "swept dead connection-table entries");
        }
        if let Ok(mut published) = census.lock() {
            *published = Some((Instant::now(), pass.census));
        }
    }
}

/// What a pass did and left.
#[derive(Debug, Default)]
struct Pass {
    removed: usize,
    census: ConnectionCensus,
}

/// One pass: walks the keys through `walk`, removes dead entries through
/// `flows` a batch at a time, pausing between batches, and counts the rest.
/// None when stopped midway.
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
    stop: &AtomicBool,
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
        remove_dead(flows, &batch[..walked_past], settings, &mut pass);
        batch.drain(..walked_past);
        if sleep_unless_stopped(PAUSE, stop) {
            return None;
        }
    }
    remove_dead(flows, &batch, settings, &mut pass);
    Some(pass)
}

/// Removes the entries under `keys` that are dead now, and counts the rest,
/// in `pass`.
fn remove_dead(
    flows: &mut HashMap<MapData, FlowKey, Flow>,
    keys: &[FlowKey],
    settings: &Settings,
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
        if !is_dead(key, &flow, now, settings) {
            // Not dead: a reply entry among those left holds its tuple.
            pass.census.count(&flow, true);
        } else if flows.remove(key).is_ok() {
            pass.removed += 1;
        }
    }
}

/// Sleeps `duration` in short steps; true once `stop` is set.
fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) -> bool {
    let step = Duration::from_millis(50);
    let mut slept = Duration::ZERO;
    while slept < duration {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(step);
        slept += step;
    }
    stop.load(Ordering::SeqCst)
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
