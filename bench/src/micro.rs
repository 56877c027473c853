//! Per-packet cost of the XDP program, by the kernel's own clock
//! (BPF_PROG_TEST_RUN), next to a floor program that does the least any XDP
//! forwarder does (parse, swap MACs, XDP_TX).
//!
//! Why one packet per call, and not `repeat`: with `repeat`, the kernel runs
//! the program again on the frame the previous run left behind. xlb rewrites
//! its frame (addresses, ports, MACs), so from the second run on it sees a
//! frame addressed to another host's MAC and takes the cheap
//! pass-to-the-kernel path: a repeated run would time that path, not the
//! one named. So every case runs one fresh frame per call and adds up the
//! kernel's time for each call.
//! Each of those times includes a fixed cost of the timing window itself
//! (clock reads, entering the program); the floor measured both ways (one
//! per call, and repeated in the kernel, which it can be: its output is as
//! good as its input) gives that cost, which is subtracted for the net cost.
//! The counters are checked after every round: each case must have taken
//! the path it is named after, every time.

use anyhow::{anyhow, bail, ensure, Context};
use aya::{programs::Xdp, Ebpf};
use lb_common::stats::Counter;
use lb_tests::{
    fixture::{self, Fixture, XDP_PASS, XDP_REDIRECT, XDP_TX},
    packet::{parse_and_verify, Frame, ACK, SYN},
    testbed::{CLIENT_ADDRS, FRONTEND_PORT, LB_PRIVATE, LB_PUBLIC, VIP, WEB_ADDRS},
};
use lb_user::dataplane::BENCH_FLOOR_OBJECT;

use super::Spread;

/// Each round is a fresh fixture (namespace, program, empty tables).
pub const ROUNDS: usize = 8;
/// Each round interleaves the cases in chunks, so that the machine's
/// background noise falls on all of them alike.
const CHUNKS: usize = 10;
/// Calls per case and chunk (established, reply, not a service, floor).
const CALLS_PER_CHUNK: u64 = 10_000;
/// New connections per chunk: 4,000 per round, 20% of the frontend's SNAT
/// ports (two backends, 10,000 ports each), so collisions on the random
/// port pick stay rare, as on a lightly loaded balancer.
const NEW_FLOWS_PER_CHUNK: usize = 400;
/// In-kernel repeat for the two frames that stay the same run after run.
pub const IN_KERNEL_REPEAT: u32 = 1_000_000;

/// The repeat of the established frame that shows what `repeat` would time.
pub const REPEAT_SHOWN: u32 = 1_000;

/// A request-sized payload for the established and floor frames, and a
/// response-sized one for the reply.
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 198.51.100.100:3000\r\nUser-Agent: bench\r\n\r\n";
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nweb1 frontend\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    NewFlow,
    Established,
    Reply,
    NotService,
    Floor,
}

impl Case {
    pub const ALL: [Case; 5] = [
        Case::NewFlow,
        Case::Established,
        Case::Reply,
        Case::NotService,
        Case::Floor,
    ];

    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Case::NewFlow => "new flow",
            Case::Established => "established flow",
            Case::Reply => "reply",
            Case::NotService => "not a service (diagnostic)",
            Case::Floor => "floor (bench_floor)",
        }
    }

    #[must_use]
    pub fn frame(self) -> String {
        match self {
            Case::NewFlow => "TCP SYN client -> VIP:3000, a new source port each time".to_owned(),
            Case::Established => format!(
                "TCP ACK with a {} B request, client -> VIP:3000, of an open connection",
                REQUEST.len()
            ),
            Case::Reply => format!(
                "TCP ACK with a {} B response, backend -> SNAT address:port",
                RESPONSE.len()
            ),
            Case::NotService => "the established frame, but to the LB's own address, port 22".to_owned(),
            Case::Floor => "the established frame".to_owned(),
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The measurement.
pub struct Micro {
    /// Packets run per case, over all rounds.
    pub packets: [u64; 5],
    /// Kernel time per call, one packet per call: per-round means, in ns.
    pub per_call: [Spread; 5],
    /// The floor repeated in the kernel: its own cost.
    pub floor_repeated: Spread,
    /// The not-a-service frame repeated in the kernel: a check of the
    /// subtraction, since that frame also stays the same run after run.
    pub not_service_repeated: Spread,
}

impl Micro {
    /// The timing window's own cost in each one-packet call.
    #[must_use]
    pub fn overhead(&self) -> f64 {
        self.per_call[Case::Floor.index()].median - self.floor_repeated.median
    }

    /// Cost of the program alone for `case`.
    #[must_use]
    pub fn net(&self, case: Case) -> f64 {
        match case {
            Case::Floor => self.floor_repeated.median,
            _ => self.per_call[case.index()].median - self.overhead(),
        }
    }

    #[must_use]
    pub fn per_call(&self, case: Case) -> Spread {
        self.per_call[case.index()]
    }

    #[must_use]
    pub fn packets(&self, case: Case) -> u64 {
        self.packets[case.index()]
    }
}

/// One round's totals.
#[derive(Default)]
struct Round {
    ns: [u64; 5],
    packets: [u64; 5],
    floor_repeated: f64,
    not_service_repeated: f64,
}

impl Round {
    fn add(&mut self, case: Case, ns: u64) {
        self.ns[case.index()] += ns;
        self.packets[case.index()] += 1;
    }

    fn mean(&self, case: Case) -> f64 {
        self.ns[case.index()] as f64 / self.packets[case.index()] as f64
    }
}

pub fn measure() -> anyhow::Result<Micro> {
    let mut rounds = Vec::with_capacity(ROUNDS);
    for i in 1..=ROUNDS {
        super::check_interrupted()?;
        let round = fixture::with_fixture(&fixture::services(), run_round)
            .context("the BPF_PROG_TEST_RUN fixture")??;
        eprintln!(
            "  round {i}/{ROUNDS}: new {:.0} ns, established {:.0} ns, reply {:.0} ns, \
             not a service {:.0} ns, floor {:.0} ns per call; floor repeated {:.1} ns",
            round.mean(Case::NewFlow),
            round.mean(Case::Established),
            round.mean(Case::Reply),
            round.mean(Case::NotService),
            round.mean(Case::Floor),
            round.floor_repeated,
        );
        rounds.push(round);
    }
    let spread = |f: &dyn Fn(&Round) -> f64| Spread::of(rounds.iter().map(f).collect());
    Ok(Micro {
        packets: std::array::from_fn(|i| rounds.iter().map(|r| r.packets[i]).sum()),
        per_call: Case::ALL.map(|case| spread(&|r| r.mean(case))),
        floor_repeated: spread(&|r| r.floor_repeated),
        not_service_repeated: spread(&|r| r.not_service_repeated),
    })
}

/// The frames of one round.
struct Frames {
    syns: Vec<Vec<u8>>,
    established: Vec<u8>,
    reply: Vec<u8>,
    not_service: Vec<u8>,
}

impl Frames {
    /// Opens the connection the established and reply frames belong to,
    /// and learns the backend and SNAT port the program gave it.
    fn prepare(lb: &Xdp, fx: &Fixture) -> anyhow::Result<Self> {
        let client = (CLIENT_ADDRS[0], 40_000);
        let vip = (VIP, FRONTEND_PORT);
        let syn = Frame::tcp(client, vip, SYN).build();
        let (_, opened) = run_once(lb, &syn, fx.public_ifindex, XDP_REDIRECT)?;
        let opened = parse_and_verify(&opened).map_err(|e| anyhow!("SYN forwarded invalid: {e}"))?;
        ensure!(
            WEB_ADDRS.contains(&opened.dst) && opened.src == LB_PRIVATE,
            "the SYN went to {}:{} from {}, not to a backend from the SNAT address",
            opened.dst,
            opened.dst_port,
            opened.src
        );
        let reply = Frame::tcp((opened.dst, FRONTEND_PORT), (LB_PRIVATE, opened.src_port), ACK)
            .with_payload(RESPONSE)
            .addressed_to(fx.private_mac)
            .build();
        // Distinct from `client`'s port: 10,000 + i/2 over both client addresses.
        let syns = (0..CHUNKS * NEW_FLOWS_PER_CHUNK)
            .map(|i| {
                let port = u16::try_from(10_000 + i / 2).context("source port")?;
                Ok(Frame::tcp((CLIENT_ADDRS[i % 2], port), vip, SYN).build())
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            syns,
            established: Frame::tcp(client, vip, ACK).with_payload(REQUEST).build(),
            reply,
            not_service: Frame::tcp(client, (LB_PUBLIC, 22), ACK)
                .with_payload(REQUEST)
                .build(),
        })
    }
}

/// One round in a fresh fixture; runs on the fixture's thread.
fn run_round(fx: &Fixture) -> anyhow::Result<Round> {
    let mut floor_object = Ebpf::load(BENCH_FLOOR_OBJECT).context("load the floor object")?;
    let floor: &mut Xdp = floor_object
        .program_mut("bench_floor")
        .context("the floor object has no bench_floor program")?
        .try_into()
        .context("bench_floor is not an XDP program")?;
    floor.load().context("load bench_floor into the kernel")?;

    let mut dataplane = fx
        .dataplane
        .lock()
        .map_err(|_| anyhow!("the dataplane lock is poisoned"))?;
    let lb = dataplane.program().context("the XDP program")?;
    let frames = Frames::prepare(lb, fx)?;
    let (public, private) = (fx.public_ifindex, fx.private_ifindex);

    let mut round = Round::default();
    let mut syns = frames.syns.iter();
    for _ in 0..CHUNKS {
        super::check_interrupted()?;
        for syn in syns.by_ref().take(NEW_FLOWS_PER_CHUNK) {
            round.add(Case::NewFlow, run_once(lb, syn, public, XDP_REDIRECT)?.0);
        }
        for _ in 0..CALLS_PER_CHUNK {
            round.add(
                Case::Established,
                run_once(lb, &frames.established, public, XDP_REDIRECT)?.0,
            );
        }
        for _ in 0..CALLS_PER_CHUNK {
            round.add(Case::Reply, run_once(lb, &frames.reply, private, XDP_REDIRECT)?.0);
        }
        for _ in 0..CALLS_PER_CHUNK {
            round.add(
                Case::NotService,
                run_once(lb, &frames.not_service, public, XDP_PASS)?.0,
            );
        }
        for _ in 0..CALLS_PER_CHUNK {
            round.add(
                Case::Floor,
                run_once(floor, &frames.established, public, XDP_TX)?.0,
            );
        }
    }
    round.floor_repeated = run_repeated(floor, &frames.established, public, XDP_TX)?;
    round.not_service_repeated = run_repeated(lb, &frames.not_service, public, XDP_PASS)?;
    // Why not `repeat`, shown: only the first run follows the connection
    // (the counters below check it); the others see the frame it left, now
    // addressed to a backend's MAC, and pass it to the kernel as another
    // host's (the verdict the kernel reports is the last run's).
    let (verdict, _) = fixture::run_program(lb, &frames.established, public, REPEAT_SHOWN);
    ensure!(
        verdict.action == XDP_PASS,
        "a repeated established frame ended in XDP action {}",
        verdict.action
    );

    // The opening SYN, then each case's packets, and the runs above;
    // anything else means a case did not take its path.
    // did not take its path.
    let expected = |counter: Counter| match counter {
        Counter::ForwardNew => 1 + round.packets[Case::NewFlow.index()],
        Counter::ForwardEstablished => round.packets[Case::Established.index()] + 1,
        Counter::ForwardReply => round.packets[Case::Reply.index()],
        Counter::PassNotService => round.packets[Case::NotService.index()] + u64::from(IN_KERNEL_REPEAT),
        Counter::PassOtherHost => u64::from(REPEAT_SHOWN - 1),
        _ => 0,
    };
    let wrong: Vec<String> = dataplane
        .counters()
        .context("read the counters")?
        .into_iter()
        .filter(|&(counter, n)| n != expected(counter))
        .map(|(counter, n)| format!("{} = {n}, expected {}", counter.name(), expected(counter)))
        .collect();
    if !wrong.is_empty() {
        bail!("the cases did not take their paths: {}", wrong.join(", "));
    }
    Ok(round)
}

/// Runs `frame` once; returns the kernel's time for the call and the frame
/// as the program left it.
fn run_once(program: &Xdp, frame: &[u8], ifindex: u32, action: u32) -> anyhow::Result<(u64, Vec<u8>)> {
    let (verdict, duration) = fixture::run_program(program, frame, ifindex, 1);
    ensure!(
        verdict.action == action,
        "expected XDP action {action}, got {}",
        verdict.action
    );
    Ok((duration.as_nanos() as u64, verdict.frame))
}

/// Runs `frame` [`IN_KERNEL_REPEAT`] times in one call; returns the mean ns
/// per run (the kernel reports whole nanoseconds).
fn run_repeated(program: &Xdp, frame: &[u8], ifindex: u32, action: u32) -> anyhow::Result<f64> {
    let (verdict, duration) = fixture::run_program(program, frame, ifindex, IN_KERNEL_REPEAT);
    ensure!(
        verdict.action == action,
        "expected XDP action {action}, got {}",
        verdict.action
    );
    Ok(duration.as_nanos() as f64)
}
