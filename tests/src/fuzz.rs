//! Fuzzing through the real program: random and mutated frames run through
//! the loaded XDP object with BPF_PROG_TEST_RUN, every result judged by a
//! checker written from the RFCs and the README, not from the program's
//! code (nothing here uses lb-common's NAT or checksum code).
//!
//! The frames start from valid seeds of every path: the handshake and the
//! data of tracked TCP connections and UDP flows (some from a client without
//! a neighbour entry), backend replies to the SNAT address, new SYNs and
//! datagrams (also to empty pools, which refuse or drop, and to backends
//! without a neighbour entry), segments of no tracked connection (handed to
//! the VRRP peer in every other batch), traffic for no service, ARP, IPv6,
//! garbage, frames for another host's MAC, broadcast and multicast. About a
//! quarter go as they are, so that translations really happen; the rest are
//! mutated lightly (flags, TCP options, payload, TTL, MACs, ingress
//! interface; checksums stay right) or heavily (bit flips, truncation,
//! garbage, random lengths, total-length, header-length and fragment
//! fields, wrong checksums), the heavy ones half the time with their
//! checksums made right again so that they reach deeper.
//!
//! The checker accepts, for each frame: a drop; a pass with the frame
//! untouched; or a translation: a forward one (from a SNAT address to an
//! active backend of the service the frame was for, of a connection a SYN
//! opened), a reply one (from a backend to a SNAT address, back to the
//! client and service of a forward translation seen earlier), each changing
//! nothing but MACs (then the next hop's), TTL (by one), addresses, ports
//! and checksums, and keeping each checksum exactly as right or wrong as it
//! was (RFC 1624); for a SYN to a service with an empty pool that resets,
//! the RST+ACK of RFC 9293 3.10.7.1; for a SYN to the service with SYN
//! cookies, a SYN-ACK from the service acknowledging it (the cookie is the
//! program's), and for a client's ACK of such a cookie (the generator
//! answers some), the client's SYN sent to an active backend from a SNAT
//! address with the client's ISN; and, with a peer, a segment for a
//! service sent on to it unchanged but for the MACs. XDP_ABORTED is always
//! bad. Per batch, the program's global counters must have counted every
//! frame exactly once, in the group of the outcome the checker saw. Which
//! backend and which SNAT tuple the program chooses is its own business:
//! only the sets they come from are checked. The checker knows only the
//! configuration ([`fuzz_services`]) and the fixture's interfaces and
//! neighbours ([`Network`]), never the program's maps.

use std::{
    collections::HashMap,
    fmt::{self, Write as _},
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use anyhow::Context;
use aya::programs::{TestRun, TestRunOptions, Xdp};

use crate::{
    fixture::{
        with_fixture_settings, Fixture, CLIENT_MAC, HAIRPIN_PORT, PUBLIC_BACKEND, PUBLIC_BACKEND_MAC,
        UNRESOLVED_BACKEND, UNRESOLVED_PORT, WEB_MACS, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX,
    },
    testbed::{
        ANCHOR, API_PORT, CLIENT_ADDRS, FRONTEND_PORT, LB_PRIVATE, LB_PUBLIC, UDP_PORT, VIP, WEB_ADDRS,
    },
};

/// The action of a program that failed (not in [`crate::fixture`], which
/// never expects it).
pub const XDP_ABORTED: u32 = 0;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// A service whose only backend is drained (weight 0), answering new TCP
/// connections with a reset.
pub const DRAINED_PORT: u16 = 4200;
/// As [`DRAINED_PORT`], but configured to drop.
pub const DRAINED_DROP_PORT: u16 = 4300;
/// A UDP service whose only backend is drained: datagrams are dropped.
pub const DRAINED_UDP_PORT: u16 = 4400;
/// A TCP service that answers every SYN with a SYN cookie.
pub const GUARDED_PORT: u16 = 4500;

/// Frames per counter check.
const BATCH: u64 = 10_000;
/// Bad frames described in the report.
const DESCRIBED: usize = 10;
/// BPF_PROG_TEST_RUN takes at least an Ethernet header and at most about a
/// page; generated frames stay within these.
const MIN_FRAME: usize = 14;
const MAX_FRAME: usize = 1600;

// ---- the report ----------------------------------------------------------

/// What a fuzz run did and found.
#[derive(Clone, Debug)]
pub struct FuzzReport {
    pub frames: u64,
    /// Generating, running and checking the frames (not the fixture's set-up).
    pub elapsed: Duration,
    /// Frames by outcome ([`Kind::name`]), every kind listed, then
    /// `bad`: the frames the checker rejected. They add up to `frames`.
    pub outcomes: Vec<(String, u64)>,
    /// Frames by seed and by how they were mutated.
    pub inputs: Vec<(String, u64)>,
    /// Frames the checker rejected, and batches whose counters disagree.
    pub bad: u64,
    /// `bad` by reason (the description with its numbers left out).
    pub bad_reasons: Vec<(String, u64)>,
    /// How much each of the program's global counters went up over the run.
    pub counters: Vec<(String, u64)>,
    /// The first few rejections, with the input and output in hex.
    pub first_bad: Vec<String>,
}

impl FuzzReport {
    #[must_use]
    pub fn per_second(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Frames with outcome `kind` (a [`Kind::name`]).
    #[must_use]
    pub fn count(&self, kind: &str) -> u64 {
        self.outcomes
            .iter()
            .find(|(name, _)| name == kind)
            .map_or(0, |(_, n)| *n)
    }

    /// Frames the program translated (forward, reply, or refused with a reset).
    #[must_use]
    pub fn translated(&self) -> u64 {
        Kind::ALL
            .iter()
            .filter(|kind| kind.rewrites())
            .map(|kind| self.count(kind.name()))
            .sum()
    }
}

impl fmt::Display for FuzzReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} frames in {:.2?} ({:.0} frames/s), {} translated, {} bad",
            self.frames,
            self.elapsed,
            self.per_second(),
            self.translated(),
            self.bad
        )?;
        writeln!(f, "outcomes:")?;
        for (name, n) in &self.outcomes {
            writeln!(f, "  {name:32} {n:>10}")?;
        }
        writeln!(f, "inputs:")?;
        for (name, n) in &self.inputs {
            writeln!(f, "  {name:32} {n:>10}")?;
        }
        writeln!(f, "counters:")?;
        for (name, n) in self.counters.iter().filter(|(_, n)| *n > 0) {
            writeln!(f, "  {name:32} {n:>10}")?;
        }
        for (reason, n) in &self.bad_reasons {
            writeln!(f, "bad {n:>8}: {reason}")?;
        }
        for description in &self.first_bad {
            writeln!(f, "BAD: {description}")?;
        }
        Ok(())
    }
}

// ---- what the checker knows: the configuration ---------------------------

/// A service as configured, the checker's source of allowed translations.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    pub name: &'static str,
    pub proto: u8,
    pub addrs: Vec<Ipv4Addr>,
    pub port: u16,
    /// Backends and their weights; weight 0 takes no new connections.
    pub backends: Vec<(SocketAddrV4, u32)>,
    /// `on_empty = "reset"` (else "drop").
    pub reset_when_empty: bool,
    /// `syn_cookies = "always"` (else "never": the fuzz fixture has no
    /// service whose mode would change with the traffic).
    pub syn_cookies: bool,
}

impl ServiceSpec {
    fn endpoints(&self) -> impl Iterator<Item = SocketAddrV4> + '_ {
        self.addrs.iter().map(|addr| SocketAddrV4::new(*addr, self.port))
    }

    fn takes(&self, backend: SocketAddrV4) -> bool {
        self.backends
            .iter()
            .any(|(b, weight)| *b == backend && *weight > 0)
    }

    fn has_active_backend(&self) -> bool {
        self.backends.iter().any(|(_, weight)| *weight > 0)
    }

    fn serves_from(&self, backend: SocketAddrV4) -> bool {
        self.backends.iter().any(|(b, _)| *b == backend)
    }
}

/// The fuzz fixture's services: the testbed's and the fixture's (see
/// [`crate::fixture::services`]), and three whose pool is empty.
#[must_use]
pub fn fuzz_services() -> Vec<ServiceSpec> {
    let webs = |port: u16| -> Vec<(SocketAddrV4, u32)> {
        WEB_ADDRS
            .iter()
            .map(|addr| (SocketAddrV4::new(*addr, port), 1))
            .collect()
    };
    let service = |name, proto, addrs: &[Ipv4Addr], port, backends, reset_when_empty| ServiceSpec {
        name,
        proto,
        addrs: addrs.to_vec(),
        port,
        backends,
        reset_when_empty,
        syn_cookies: false,
    };
    let drained = |port| vec![(SocketAddrV4::new(WEB_ADDRS[0], port), 0)];
    vec![
        service(
            "frontend",
            TCP,
            &[VIP, ANCHOR],
            FRONTEND_PORT,
            webs(FRONTEND_PORT),
            true,
        ),
        service("api", TCP, &[VIP, ANCHOR], API_PORT, webs(API_PORT), true),
        service("udp-echo", UDP, &[VIP], UDP_PORT, webs(UDP_PORT), true),
        service(
            "unresolved",
            TCP,
            &[VIP],
            UNRESOLVED_PORT,
            vec![(SocketAddrV4::new(UNRESOLVED_BACKEND, UNRESOLVED_PORT), 1)],
            true,
        ),
        service(
            "hairpin",
            TCP,
            &[VIP],
            HAIRPIN_PORT,
            vec![(SocketAddrV4::new(PUBLIC_BACKEND, HAIRPIN_PORT), 1)],
            true,
        ),
        service("drained", TCP, &[VIP], DRAINED_PORT, drained(DRAINED_PORT), true),
        service(
            "drained-drop",
            TCP,
            &[VIP, ANCHOR],
            DRAINED_DROP_PORT,
            drained(DRAINED_DROP_PORT),
            false,
        ),
        service(
            "drained-udp",
            UDP,
            &[VIP],
            DRAINED_UDP_PORT,
            drained(DRAINED_UDP_PORT),
            true,
        ),
        ServiceSpec {
            syn_cookies: true,
            ..service("guarded", TCP, &[VIP], GUARDED_PORT, webs(GUARDED_PORT), true)
        },
    ]
}

/// The `[[service]]` tables of `services`.
#[must_use]
pub fn services_toml(services: &[ServiceSpec]) -> String {
    let mut text = String::new();
    for service in services {
        let quoted = |items: Vec<String>| items.join(", ");
        let addrs = quoted(service.addrs.iter().map(|a| format!("\"{a}\"")).collect());
        let backends = quoted(
            service
                .backends
                .iter()
                .enumerate()
                .map(|(i, (addr, weight))| {
                    format!("{{ name = \"b{i}\", address = \"{addr}\", weight = {weight} }}")
                })
                .collect(),
        );
        let _ = write!(
            text,
            "\n[[service]]\nname = \"{}\"\naddresses = [{addrs}]\nport = {}\nprotocol = \"{}\"\n\
             on_empty = \"{}\"\nbackends = [{backends}]\n",
            service.name,
            service.port,
            if service.proto == TCP { "tcp" } else { "udp" },
            if service.reset_when_empty { "reset" } else { "drop" },
        );
        if service.proto == TCP {
            let _ = writeln!(
                text,
                "syn_cookies = \"{}\"",
                if service.syn_cookies { "always" } else { "never" }
            );
        }
    }
    text
}

/// Everything the checker may rely on: the configuration and the fixture's
/// interfaces and static neighbours, never the program's maps.
#[derive(Clone, Debug)]
pub struct Network {
    pub services: Vec<ServiceSpec>,
    /// Addresses the LB may use as the source towards backends (the
    /// fixture's `snat_address`).
    pub snat_addrs: Vec<Ipv4Addr>,
    /// The interfaces the program serves: (ifindex, MAC).
    pub interfaces: Vec<(u32, [u8; 6])>,
    /// Static neighbours: (address, its MAC, the MAC of the interface it is on).
    pub neighbours: Vec<(Ipv4Addr, [u8; 6], [u8; 6])>,
    /// The VRRP peer that untracked segments are handed to, if one is
    /// configured: (ifindex of the link to it, its MAC).
    pub peer: Option<(u32, [u8; 6])>,
}

impl Network {
    /// The network of [`crate::fixture`] with `services`.
    #[must_use]
    pub fn of_fixture(services: Vec<ServiceSpec>, public: (u32, [u8; 6]), private: (u32, [u8; 6])) -> Self {
        let mut neighbours = vec![(PUBLIC_BACKEND, PUBLIC_BACKEND_MAC, public.1)];
        neighbours.extend(CLIENT_ADDRS.iter().map(|addr| (*addr, CLIENT_MAC, public.1)));
        neighbours.extend(
            WEB_ADDRS
                .iter()
                .zip(WEB_MACS)
                .map(|(addr, mac)| (*addr, mac, private.1)),
        );
        Self {
            services,
            snat_addrs: vec![LB_PRIVATE],
            interfaces: vec![public, private],
            neighbours,
            peer: None,
        }
    }

    fn service_at(&self, proto: u8, dst: SocketAddrV4) -> Option<&ServiceSpec> {
        self.services
            .iter()
            .find(|s| s.proto == proto && s.endpoints().any(|e| e == dst))
    }

    fn interface_mac(&self, ifindex: u32) -> Option<[u8; 6]> {
        self.interfaces
            .iter()
            .find(|(index, _)| *index == ifindex)
            .map(|(_, mac)| *mac)
    }

    /// (the neighbour's MAC, the MAC of the interface it is on).
    fn neighbour(&self, addr: Ipv4Addr) -> Option<([u8; 6], [u8; 6])> {
        self.neighbours
            .iter()
            .find(|(a, _, _)| *a == addr)
            .map(|(_, mac, via)| (*mac, *via))
    }

    /// The README: a unicast frame is handled only by the interface it is
    /// addressed to; broadcast and multicast frames by any.
    fn addressed_here(&self, ingress: u32, frame: &[u8]) -> bool {
        frame[0] & 1 == 1 || self.interface_mac(ingress).is_some_and(|mac| frame[..6] == mac)
    }
}

// ---- the checker ---------------------------------------------------------

/// What happened to a frame, as the checker saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    PassUntouched,
    Drop,
    /// Translated towards a backend and sent on by XDP.
    Forward,
    /// Translated back towards a client and sent on by XDP.
    Reply,
    /// Translated, then handed to the kernel to route (no neighbour entry or no route).
    ForwardToKernel,
    ReplyToKernel,
    /// A SYN to an empty pool answered with a RST+ACK.
    Refusal,
    /// A segment of a connection not tracked here, sent on unchanged (but
    /// for the MACs) to the VRRP peer, which may track it.
    Handoff,
    /// A packet too big for its path, with DF, answered with ICMP
    /// "fragmentation needed" back to its sender.
    FragNeeded,
    /// A SYN to a service with SYN cookies, answered with a SYN-ACK whose
    /// sequence number is the cookie.
    CookieAnswer,
    /// A client's ACK of a SYN cookie, sent to a backend as the client's SYN.
    CookieOpen,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::PassUntouched,
        Kind::Drop,
        Kind::Forward,
        Kind::Reply,
        Kind::ForwardToKernel,
        Kind::ReplyToKernel,
        Kind::Refusal,
        Kind::Handoff,
        Kind::FragNeeded,
        Kind::CookieAnswer,
        Kind::CookieOpen,
    ];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Kind::PassUntouched => "pass_untouched",
            Kind::Drop => "drop",
            Kind::Forward => "translated_forward",
            Kind::Reply => "translated_reply",
            Kind::ForwardToKernel => "translated_forward_to_kernel",
            Kind::ReplyToKernel => "translated_reply_to_kernel",
            Kind::Refusal => "reset_refusal",
            Kind::Handoff => "handoff_to_peer",
            Kind::FragNeeded => "frag_needed_answer",
            Kind::CookieAnswer => "syn_cookie_answer",
            Kind::CookieOpen => "opened_by_cookie",
        }
    }

    /// Whether the program translated the frame (or answered it).
    #[must_use]
    pub const fn rewrites(self) -> bool {
        !matches!(self, Kind::PassUntouched | Kind::Drop | Kind::Handoff)
    }

    /// The group of global counters (by name, see [`counter_group`]) that
    /// must count a frame with this outcome.
    const fn counter_group(self) -> &'static str {
        match self {
            Kind::PassUntouched => "passed untouched",
            Kind::Drop => "dropped",
            Kind::Forward => "forwarded",
            Kind::Reply => "replied",
            Kind::ForwardToKernel | Kind::ReplyToKernel => "translated for the kernel",
            Kind::Refusal => "refused",
            Kind::Handoff => "handed off",
            Kind::FragNeeded => "answered as too big",
            Kind::CookieAnswer => "answered with a cookie",
            Kind::CookieOpen => "opened by cookie",
        }
    }

    fn index(self) -> usize {
        Kind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// The outcome group a global counter belongs to, by its documented name
/// (METRICS.md): `forward_reply`, other `forward_*`, `pass_no_neighbour`,
/// `pass_no_route` and `pass_to_fragment` (translated, then passed), other
/// `pass_*`, `drop_*`, `reset_*`, `handoff_*`, `icmp_frag_needed`. None for
/// a counter whose outcome the checker does not know.
#[must_use]
pub fn counter_group(name: &str) -> Option<&'static str> {
    Some(match name {
        "forward_reply" => Kind::Reply.counter_group(),
        "pass_no_neighbour" | "pass_no_route" | "pass_to_fragment" => Kind::ForwardToKernel.counter_group(),
        "icmp_frag_needed" => Kind::FragNeeded.counter_group(),
        "syn_cookie_sent" => Kind::CookieAnswer.counter_group(),
        "forward_new_by_cookie" => Kind::CookieOpen.counter_group(),
        _ if name.starts_with("forward_") => Kind::Forward.counter_group(),
        _ if name.starts_with("pass_") => Kind::PassUntouched.counter_group(),
        _ if name.starts_with("drop_") => Kind::Drop.counter_group(),
        _ if name.starts_with("reset_") => Kind::Refusal.counter_group(),
        _ if name.starts_with("handoff_") => Kind::Handoff.counter_group(),
        _ => return None,
    })
}

/// A connection as one translation showed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mapping {
    pub proto: u8,
    pub client: SocketAddrV4,
    pub service: SocketAddrV4,
    pub snat: SocketAddrV4,
    pub backend: SocketAddrV4,
}

/// A frame the checker accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    pub kind: Kind,
    /// The connection a forward or reply translation belongs to.
    pub mapping: Option<Mapping>,
    /// A forward translation of a TCP SYN (without ACK) or of a UDP datagram.
    pub opens: bool,
    /// (protocol, client, service) of a packet that opens a connection and
    /// was answered as too big for its path.
    pub answered_opening: Option<(u8, SocketAddrV4, SocketAddrV4)>,
}

impl Checked {
    const fn plain(kind: Kind) -> Self {
        Self {
            kind,
            mapping: None,
            opens: false,
            answered_opening: None,
        }
    }
}

/// What earlier forward translations showed, which later translations
/// must agree with.
#[derive(Default, Debug)]
pub struct Translations {
    /// (protocol, SNAT tuple, backend) -> (client, service) of the latest
    /// few forward translations that went out with that tuple.
    owners: HashMap<(u8, SocketAddrV4, SocketAddrV4), Vec<(SocketAddrV4, SocketAddrV4)>>,
    /// (protocol, client, service) -> (SNAT tuple, backend) of the latest
    /// forward translation of every connection a forward translation opened.
    latest: HashMap<(u8, SocketAddrV4, SocketAddrV4), (SocketAddrV4, SocketAddrV4)>,
    /// Connections whose opening packet was answered as too big instead of
    /// translated: the program recorded the connection (a router answers
    /// after routing), but no translation showed where it goes; the next
    /// forward translation of the connection does. Until then its replies
    /// are judged by their backend and service alone.
    unseen: std::collections::HashSet<(u8, SocketAddrV4, SocketAddrV4)>,
}

impl Translations {
    /// Owners remembered per SNAT tuple: a tuple goes to another client only
    /// after its connection ended, so the latest few always include the
    /// current owner.
    const REMEMBERED: usize = 8;

    pub fn record(&mut self, checked: &Checked) {
        if let Some(connection) = checked.answered_opening {
            self.latest.remove(&connection);
            self.unseen.insert(connection);
            return;
        }
        let Some(m) = checked.mapping else { return };
        if !matches!(
            checked.kind,
            Kind::Forward | Kind::ForwardToKernel | Kind::CookieOpen
        ) {
            return;
        }
        self.unseen.remove(&(m.proto, m.client, m.service));
        self.latest
            .insert((m.proto, m.client, m.service), (m.snat, m.backend));
        let owners = self.owners.entry((m.proto, m.snat, m.backend)).or_default();
        let owner = (m.client, m.service);
        owners.retain(|o| *o != owner);
        owners.push(owner);
        if owners.len() > Self::REMEMBERED {
            owners.remove(0);
        }
    }
}

/// Judges one run of the program: `input` arrived on `ingress`, the
/// program returned `action` and left `output`.
pub fn check(
    net: &Network,
    seen: &Translations,
    ingress: u32,
    input: &[u8],
    action: u32,
    output: &[u8],
) -> Result<Checked, String> {
    match action {
        XDP_ABORTED => Err("XDP_ABORTED: the program failed".into()),
        XDP_DROP => Ok(Checked::plain(Kind::Drop)),
        XDP_PASS if output == input => Ok(Checked::plain(Kind::PassUntouched)),
        XDP_PASS => check_translation(net, seen, ingress, input, output, Egress::Kernel),
        XDP_TX | XDP_REDIRECT
            if output.len() == input.len() && output.len() >= 12 && output[12..] == input[12..] =>
        {
            check_handoff(net, ingress, input, output)
        }
        XDP_TX | XDP_REDIRECT if looks_like_frag_needed(output) => {
            check_frag_needed(net, seen, ingress, input, output)
        }
        XDP_TX | XDP_REDIRECT => check_translation(net, seen, ingress, input, output, Egress::Direct),
        other => Err(format!("unknown XDP action {other}")),
    }
}

/// Where a rewritten frame went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Egress {
    /// Sent by XDP (redirect or TX): the MACs must be the next hop's.
    Direct,
    /// Passed to the kernel to route: the MACs stay as they arrived.
    Kernel,
}

/// Where a translated protocol keeps its checksum. ICMP (echo identifiers,
/// errors quoting the packet they answer) would add a layout here and its
/// own translation kind.
#[derive(Clone, Copy, Debug)]
struct L4Layout {
    name: &'static str,
    checksum_at: usize,
    /// The checksum covers the pseudo-header (RFC 793, RFC 768).
    pseudo_header: bool,
    /// A zero checksum means "none" and must stay so (RFC 768).
    zero_means_none: bool,
}

impl L4Layout {
    fn of(proto: u8) -> Option<Self> {
        match proto {
            TCP => Some(Self {
                name: "TCP",
                checksum_at: 16,
                pseudo_header: true,
                zero_means_none: false,
            }),
            UDP => Some(Self {
                name: "UDP",
                checksum_at: 6,
                pseudo_header: true,
                zero_means_none: true,
            }),
            _ => None,
        }
    }
}

const L4_AT: usize = 34;

/// A frame the README says may be translated: Ethernet, IPv4 without
/// options, not a fragment, inside the frame, with a whole TCP or UDP header.
struct Translatable<'a> {
    frame: &'a [u8],
    proto: u8,
    layout: L4Layout,
    /// Bytes the L4 checksum covers: the IP payload for TCP, the UDP length for UDP.
    checked_len: usize,
}

impl<'a> Translatable<'a> {
    fn parse(frame: &'a [u8]) -> Result<Self, String> {
        if frame.len() < L4_AT {
            return Err(format!("{} bytes: no whole IPv4 header", frame.len()));
        }
        if be16(frame, 12) != 0x0800 {
            return Err(format!("EtherType {:#06x}, not IPv4", be16(frame, 12)));
        }
        if frame[14] >> 4 != 4 {
            return Err(format!("IP version {}", frame[14] >> 4));
        }
        if frame[14] & 0x0f != 5 {
            return Err(format!(
                "IPv4 header length {} words (options or malformed)",
                frame[14] & 0x0f
            ));
        }
        let total = usize::from(be16(frame, 16));
        if total < 20 || 14 + total > frame.len() {
            return Err(format!(
                "IPv4 total length {total} outside the frame's {} bytes after Ethernet",
                frame.len() - 14
            ));
        }
        let fragment = be16(frame, 20);
        if fragment & 0x3fff != 0 {
            return Err(format!("a fragment (flags and offset {fragment:#06x})"));
        }
        let proto = frame[23];
        let layout = L4Layout::of(proto).ok_or_else(|| format!("protocol {proto}"))?;
        let l4_len = total - 20;
        let checked_len = match proto {
            TCP => {
                let data_offset = usize::from(frame.get(L4_AT + 12).copied().unwrap_or(0) >> 4) * 4;
                if l4_len < 20 || data_offset < 20 || data_offset > l4_len {
                    return Err(format!(
                        "TCP header cut short ({l4_len} bytes, data offset {data_offset})"
                    ));
                }
                l4_len
            }
            _ => {
                let udp_len = if l4_len >= 8 {
                    usize::from(be16(frame, L4_AT + 4))
                } else {
                    0
                };
                if udp_len < 8 || udp_len > l4_len {
                    return Err(format!(
                        "UDP length {udp_len} outside the {l4_len}-byte IP payload"
                    ));
                }
                udp_len
            }
        };
        Ok(Self {
            frame,
            proto,
            layout,
            checked_len,
        })
    }

    fn src(&self) -> SocketAddrV4 {
        endpoint(self.frame, 26, L4_AT)
    }

    fn dst(&self) -> SocketAddrV4 {
        endpoint(self.frame, 30, L4_AT + 2)
    }

    fn tcp_flags(&self) -> u8 {
        if self.proto == TCP {
            self.frame[L4_AT + 13]
        } else {
            0
        }
    }

    /// The L4 checksum's residue in `frame` (this one or its translation):
    /// the ones' complement sum over pseudo-header and the covered bytes,
    /// modulo 0xffff; 0 when the checksum is right.
    fn l4_residue(&self, frame: &[u8]) -> u16 {
        let region = &frame[L4_AT..L4_AT + self.checked_len];
        let mut sum = ones_sum(region);
        if self.layout.pseudo_header {
            sum += ones_sum(&frame[26..34]) + u64::from(self.proto) + self.checked_len as u64;
        }
        (sum % 0xffff) as u16
    }

    fn l4_checksum(&self, frame: &[u8]) -> u16 {
        be16(frame, L4_AT + self.layout.checksum_at)
    }
}

/// The packet in `input`, if the program may handle it at all: addressed to
/// the interface it arrived on (frames for another host's MAC pass
/// untouched) and translatable. `did` names what the program did to it.
fn ours_to_handle<'a>(
    net: &Network,
    ingress: u32,
    input: &'a [u8],
    did: &str,
) -> Result<Translatable<'a>, String> {
    if !net.addressed_here(ingress, input) {
        return Err(format!(
            "{did} a frame for another host's MAC {} on ifindex {ingress}: such frames pass untouched",
            mac_text(&input[..6])
        ));
    }
    Translatable::parse(input).map_err(|why| format!("{did} a frame it must not handle: {why}"))
}

fn check_translation(
    net: &Network,
    seen: &Translations,
    ingress: u32,
    input: &[u8],
    output: &[u8],
    egress: Egress,
) -> Result<Checked, String> {
    let packet = ours_to_handle(net, ingress, input, "rewrote")?;
    let (src, dst) = (packet.src(), packet.dst());
    if let Some(service) = net.service_at(packet.proto, dst) {
        if service.syn_cookies && is_syn_proxy_frame(&packet, output) {
            return check_cookie(net, ingress, &packet, service, output, egress);
        }
        if !service.has_active_backend() {
            return match egress {
                Egress::Direct => check_refusal(net, ingress, &packet, service, output)
                    .map_err(|why| format!("service {:?} has an empty pool: {why}", service.name)),
                Egress::Kernel => Err(format!(
                    "passed a rewritten frame for service {:?}, whose pool is empty",
                    service.name
                )),
            };
        }
        let (out_src, out_dst) = check_rewrite(net, &packet, output, egress)?;
        if !net.snat_addrs.contains(out_src.ip()) {
            return Err(format!(
                "forward translation from {out_src}, not from a SNAT address"
            ));
        }
        if !service.takes(out_dst) {
            return Err(format!(
                "forward translation to {out_dst}, not an active backend of service {:?}",
                service.name
            ));
        }
        // The README: a TCP SYN (without ACK, RST or FIN) or a UDP datagram
        // without a live flow opens a connection, and every later packet of
        // the connection follows it. (UDP flows expire; their stickiness is
        // not judged here.)
        let opens = packet.proto == UDP || opens_connection(packet.tcp_flags());
        if !opens && !seen.unseen.contains(&(packet.proto, src, dst)) {
            match seen.latest.get(&(packet.proto, src, dst)) {
                None => {
                    return Err(format!(
                        "forwarded a TCP segment (flags {}) from {src} to {dst}, whose connection no SYN opened",
                        flags_text(packet.tcp_flags())
                    ))
                }
                Some(&(snat, backend)) if (snat, backend) != (out_src, out_dst) => {
                    return Err(format!(
                        "forwarded a TCP segment (flags {}) from {src} to {dst} as {out_src} -> {out_dst}, but its \
                         connection went as {snat} -> {backend}: later packets must follow their connection",
                        flags_text(packet.tcp_flags())
                    ))
                }
                Some(_) => {}
            }
        }
        return Ok(Checked {
            kind: if egress == Egress::Direct {
                Kind::Forward
            } else {
                Kind::ForwardToKernel
            },
            mapping: Some(Mapping {
                proto: packet.proto,
                client: src,
                service: dst,
                snat: out_src,
                backend: out_dst,
            }),
            opens,
            answered_opening: None,
        });
    }
    if !net.snat_addrs.contains(dst.ip()) {
        return Err(format!(
            "rewrote a packet to {dst}, which is neither a service nor a SNAT address"
        ));
    }
    let (out_src, out_dst) = check_rewrite(net, &packet, output, egress)?;
    let served_by = |s: &&ServiceSpec| s.proto == packet.proto && s.serves_from(src);
    if !net.services.iter().any(|s| served_by(&s)) {
        return Err(format!(
            "reply translation of a packet from {src}, which is no backend"
        ));
    }
    if !net
        .services
        .iter()
        .filter(served_by)
        .any(|s| s.endpoints().any(|e| e == out_src))
    {
        return Err(format!(
            "reply translated to come from {out_src}, not from a service that backend {src} serves"
        ));
    }
    let owners = seen.owners.get(&(packet.proto, dst, src));
    // A connection whose opening packet was answered as too big has a
    // tuple no translation showed (see `Translations::unseen`).
    let unseen = seen.unseen.contains(&(packet.proto, out_dst, out_src));
    if !unseen && !owners.is_some_and(|owners| owners.contains(&(out_dst, out_src))) {
        return Err(format!(
            "reply from {src} to {dst} sent to {out_dst} as {out_src}, but no forward translation from \
             {out_dst} to {out_src} went out as {dst} -> {src} (seen: {owners:?})"
        ));
    }
    Ok(Checked {
        kind: if egress == Egress::Direct {
            Kind::Reply
        } else {
            Kind::ReplyToKernel
        },
        mapping: Some(Mapping {
            proto: packet.proto,
            client: out_dst,
            service: out_src,
            snat: dst,
            backend: src,
        }),
        opens: false,
        answered_opening: None,
    })
}

/// An ICMP "fragmentation needed" error of the size xlb sends: IPv4 and
/// ICMP headers and a 28-byte quote.
fn looks_like_frag_needed(output: &[u8]) -> bool {
    output.len() == FRAG_NEEDED_LEN && output[23] == ICMP && output[34] == 3 && output[35] == 4
}

/// Ethernet, IPv4 and ICMP headers, and the quote: an IPv4 header and 8 bytes.
const FRAG_NEEDED_LEN: usize = 14 + 20 + 8 + 20 + 8;
/// The smallest MTU an IPv4 link may have (RFC 791).
const MIN_MTU: u16 = 68;

/// The README: a packet the program would translate (to a service with
/// backends, following its connection, or a reply to a SNAT tuple a
/// connection went out with) that is larger than its path's MTU and
/// forbids fragmentation is answered as a router would (RFC 1191, RFC 792):
/// "fragmentation needed" with the MTU, from the address the packet was
/// sent to, back to its sender's MAC from the interface's own, quoting its
/// IPv4 header and 8 bytes as they arrived; every checksum right.
fn check_frag_needed(
    net: &Network,
    seen: &Translations,
    ingress: u32,
    input: &[u8],
    output: &[u8],
) -> Result<Checked, String> {
    let packet = ours_to_handle(net, ingress, input, "answered")?;
    let (src, dst) = (packet.src(), packet.dst());
    let connection = (packet.proto, src, dst);
    let opens = packet.proto == UDP || opens_connection(packet.tcp_flags());
    let (ours, answered_opening) = match net.service_at(packet.proto, dst) {
        Some(service) => (
            service.has_active_backend()
                && (opens || seen.latest.contains_key(&connection) || seen.unseen.contains(&connection)),
            // A UDP datagram of a live flow opens nothing; the checker cannot
            // tell, so a flow it knows keeps its mapping.
            (opens && !(packet.proto == UDP && seen.latest.contains_key(&connection))).then_some(connection),
        ),
        None => (seen.owners.contains_key(&(packet.proto, dst, src)), None),
    };
    if !ours {
        return Err(format!(
            "answered a packet from {src} to {dst} as too big, but it belongs to no connection or service"
        ));
    }
    if input[20] & 0x40 == 0 {
        return Err("answered \"fragmentation needed\" to a packet without DF: a router fragments it".into());
    }
    let mtu = be16(output, 40);
    let total = be16(input, 16);
    if mtu < MIN_MTU || total <= mtu {
        return Err(format!(
            "announced an MTU of {mtu} for a packet of {total} bytes: it must be at least {MIN_MTU} and below \
             the packet's length"
        ));
    }
    if output[..6] != input[6..12] {
        return Err("sent the error elsewhere than to the sender's MAC".into());
    }
    if net.interface_mac(ingress).is_none_or(|mac| output[6..12] != mac) {
        return Err("sent the error from another MAC than the interface's own".into());
    }
    if output[12..14] != [0x08, 0x00] || output[14] != 0x45 || be16(output, 16) != 56 {
        return Err("the error's IPv4 header is not an option-less one of 56 bytes".into());
    }
    if output[22] == 0 || be16(output, 20) & 0x3fff != 0 {
        return Err("the error has TTL 0 or is a fragment".into());
    }
    if !verifies(ones_sum(&output[14..34])) {
        return Err("the error's IPv4 header checksum is wrong".into());
    }
    if output[26..30] != input[30..34] || output[30..34] != input[26..30] {
        return Err("the error is not from the address the packet was sent to, back to its source".into());
    }
    if !verifies(ones_sum(&output[34..])) {
        return Err("the ICMP checksum is wrong".into());
    }
    if output[42..] != input[14..42] {
        return Err("the quote is not the packet's IPv4 header and first 8 bytes as they arrived".into());
    }
    Ok(Checked {
        answered_opening,
        ..Checked::plain(Kind::FragNeeded)
    })
}

/// The README: a TCP segment for a service that opens no connection and
/// matches none here goes to the VRRP peer, only if it was sent to this
/// node's MAC on the peer's link and not by the peer; only the MACs change.
fn check_handoff(net: &Network, ingress: u32, input: &[u8], output: &[u8]) -> Result<Checked, String> {
    let Some((peer_ifindex, peer_mac)) = net.peer else {
        return Err("sent a frame on unchanged but for its MACs, with no VRRP peer configured".into());
    };
    let own_mac = net.interface_mac(ingress);
    if ingress != peer_ifindex || own_mac.is_none_or(|mac| input[..6] != mac) {
        return Err(format!(
            "handed to the peer a frame for {} that arrived on ifindex {ingress}: only frames sent to this node \
             on the peer's link (ifindex {peer_ifindex}) go to it",
            mac_text(&input[..6])
        ));
    }
    if input[6..12] == peer_mac {
        return Err("handed a frame from the peer back to it".into());
    }
    if output[..6] != peer_mac || own_mac.is_none_or(|mac| output[6..12] != mac) {
        return Err(format!(
            "handed off to {} from {}, not to the peer {} from this node",
            mac_text(&output[..6]),
            mac_text(&output[6..12]),
            mac_text(&peer_mac)
        ));
    }
    let packet =
        Translatable::parse(input).map_err(|why| format!("handed off a frame it must not handle: {why}"))?;
    if packet.proto != TCP || net.service_at(TCP, packet.dst()).is_none() {
        return Err(format!(
            "handed off a protocol {} packet to {}, not a TCP segment for a service",
            packet.proto,
            packet.dst()
        ));
    }
    if opens_connection(packet.tcp_flags()) {
        return Err("handed off a SYN, which opens a connection here".into());
    }
    Ok(Checked::plain(Kind::Handoff))
}

/// The checks every NAT translation must pass, whatever it translates to;
/// returns the output's source and destination.
fn check_rewrite(
    net: &Network,
    input: &Translatable<'_>,
    output: &[u8],
    egress: Egress,
) -> Result<(SocketAddrV4, SocketAddrV4), String> {
    if output.len() != input.frame.len() {
        return Err(format!(
            "translation changed the frame's length from {} to {}",
            input.frame.len(),
            output.len()
        ));
    }
    let l4_checksum = L4_AT + input.layout.checksum_at;
    for (at, (before, after)) in input.frame.iter().zip(output).enumerate() {
        let may_change = (at < 12 && egress == Egress::Direct)
            || at == 22 // TTL
            || at == 24 || at == 25 // IPv4 header checksum
            || (26..L4_AT + 4).contains(&at) // addresses, ports
            || at == l4_checksum || at == l4_checksum + 1;
        if before != after && !may_change {
            return Err(format!(
                "translation changed {} (byte {at}) from {before:#04x} to {after:#04x}: NAT changes only MACs, \
                 TTL, addresses, ports and checksums",
                field_name(at, input.proto)
            ));
        }
    }
    let ttl = input.frame[22];
    if ttl < 2 {
        return Err(format!(
            "forwarded a packet with TTL {ttl}, which must not be forwarded"
        ));
    }
    if output[22] != ttl - 1 {
        return Err(format!("TTL {} after translation, from {ttl}", output[22]));
    }
    let ip_residue = |frame: &[u8]| (ones_sum(&frame[14..34]) % 0xffff) as u16;
    let (ip_in, ip_out) = (ip_residue(input.frame), ip_residue(output));
    if ip_in != ip_out {
        return Err(format!(
            "IPv4 header checksum {} after translation, {} before: an update must keep it exactly as right or \
             wrong as it was (RFC 1624)",
            residue_text(ip_out),
            residue_text(ip_in)
        ));
    }
    let layout = input.layout;
    let (check_in, check_out) = (input.l4_checksum(input.frame), input.l4_checksum(output));
    if layout.zero_means_none && check_in == 0 {
        // No checksum: it may stay absent, or be computed, correctly.
        if check_out != 0 && input.l4_residue(output) != 0 {
            return Err(format!(
                "{} checksum {check_out:#06x} added to a datagram without one, and it is wrong",
                layout.name
            ));
        }
    } else {
        if layout.zero_means_none && check_out == 0 {
            return Err(format!(
                "{} checksum {check_in:#06x} became 0, \"no checksum\" (a computed 0 is sent as 0xffff, RFC 768)",
                layout.name
            ));
        }
        let (l4_in, l4_out) = (input.l4_residue(input.frame), input.l4_residue(output));
        if l4_in != l4_out {
            return Err(format!(
                "{} checksum {} after translation, {} before (RFC 1624: an update keeps it as right or wrong as \
                 it was)",
                layout.name,
                residue_text(l4_out),
                residue_text(l4_in)
            ));
        }
    }
    let (out_src, out_dst) = (endpoint(output, 26, L4_AT), endpoint(output, 30, L4_AT + 2));
    if egress == Egress::Direct {
        let Some((next_hop_mac, interface_mac)) = net.neighbour(*out_dst.ip()) else {
            return Err(format!(
                "sent on by XDP to {out_dst}, which has no neighbour entry"
            ));
        };
        if output[..6] != next_hop_mac || output[6..12] != interface_mac {
            return Err(format!(
                "sent to {} from {}, but {} is {} on the interface with MAC {}",
                mac_text(&output[..6]),
                mac_text(&output[6..12]),
                out_dst.ip(),
                mac_text(&next_hop_mac),
                mac_text(&interface_mac)
            ));
        }
    }
    Ok((out_src, out_dst))
}

/// RFC 9293 3.10.7.1, for a port with no listener: a segment with RST is
/// discarded; otherwise, for a segment without ACK, the reply is
/// <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, SEG.LEN counting SYN and FIN.
/// The README: only a SYN opening a connection to an empty pool that resets
/// is answered, from the VIP, back where it came from.
fn check_refusal(
    net: &Network,
    ingress: u32,
    input: &Translatable<'_>,
    service: &ServiceSpec,
    output: &[u8],
) -> Result<Checked, String> {
    let flags = input.tcp_flags();
    if input.proto != TCP {
        return Err("answered a UDP datagram with a reset".into());
    }
    if !service.reset_when_empty {
        return Err("answered with a reset, but the service drops when empty".into());
    }
    if !opens_connection(flags) {
        return Err(format!(
            "reset a segment (flags {}) that opens no connection",
            flags_text(flags)
        ));
    }
    if flags & RST != 0 {
        return Err(format!(
            "answered a segment with RST (flags {}) with a reset: RFC 9293 3.10.7.1 discards it",
            flags_text(flags)
        ));
    }
    let frame = input.frame;
    // The program answers as the endpoint here, so it must first accept
    // the segment as one.
    if !verifies(ones_sum(&frame[14..34])) {
        return Err(
            "answered a SYN whose IPv4 header checksum is wrong: a host silently discards such a datagram \
             (RFC 1122 3.2.1.2)"
                .into(),
        );
    }
    if input.l4_residue(frame) != 0 {
        return Err(
            "answered a SYN whose TCP checksum is wrong: the receiver must check it (RFC 1122 4.2.2.7) and \
             discard the segment"
                .into(),
        );
    }
    let header_len = usize::from(frame[L4_AT + 12] >> 4) * 4;
    let data_len = input.checked_len - header_len;
    let seg_len = data_len as u32 + 1 + u32::from(flags & FIN != 0);
    let expected_ack = be32(frame, L4_AT + 4).wrapping_add(seg_len);
    const LEN: usize = L4_AT + 20;
    if output.len() != LEN {
        return Err(format!(
            "a reset of {} bytes, not {LEN} (headers only)",
            output.len()
        ));
    }
    let mut wrong = Vec::new();
    let mut expect = |what: &str, ok: bool, got: String| {
        if !ok {
            wrong.push(format!("{what} {got}"));
        }
    };
    expect_sent_back(&mut expect, net, ingress, input, output)?;
    expect_built_segment(&mut expect, output, 20);
    expect(
        "sequence number",
        be32(output, 38) == 0,
        be32(output, 38).to_string(),
    );
    expect(
        &format!("acknowledgment (SEG.SEQ + SEG.LEN = {expected_ack})"),
        be32(output, 42) == expected_ack,
        be32(output, 42).to_string(),
    );
    expect("flags", output[47] == RST | ACK, flags_text(output[47]));
    if !wrong.is_empty() {
        return Err(format!("the reset's {}", wrong.join(", ")));
    }
    Ok(Checked::plain(Kind::Refusal))
}

/// The headers of a TCP segment the program built from scratch, with a
/// TCP header of `tcp_header_len` bytes and no data: IPv4 without options,
/// not a fragment, both checksums right; judged with `expect`.
fn expect_built_segment(expect: &mut impl FnMut(&str, bool, String), output: &[u8], tcp_header_len: u8) {
    expect(
        "EtherType",
        be16(output, 12) == 0x0800,
        format!("{:#06x}", be16(output, 12)),
    );
    expect("version/IHL", output[14] == 0x45, format!("{:#04x}", output[14]));
    expect(
        "total length",
        be16(output, 16) == 20 + u16::from(tcp_header_len),
        be16(output, 16).to_string(),
    );
    expect(
        "fragment",
        be16(output, 20) & 0x3fff == 0,
        format!("{:#06x}", be16(output, 20)),
    );
    expect("TTL", output[22] > 0, output[22].to_string());
    expect("protocol", output[23] == TCP, output[23].to_string());
    expect(
        "IPv4 header checksum",
        verifies(ones_sum(&output[14..34])),
        format!("{:#06x}", be16(output, 24)),
    );
    expect(
        "data offset and reserved bits",
        output[46] == (tcp_header_len / 4) << 4,
        format!("{:#04x}", output[46]),
    );
    let pseudo = ones_sum(&output[26..34]) + u64::from(TCP) + u64::from(tcp_header_len);
    expect(
        "TCP checksum",
        verifies(pseudo + ones_sum(&output[L4_AT..])),
        format!("{:#06x}", be16(output, 50)),
    );
}

/// An answer the program sent back where `input` came from, as its
/// destination answering its source: MACs and endpoints swapped (the
/// source MAC the ingress interface's own); judged with `expect`.
fn expect_sent_back(
    expect: &mut impl FnMut(&str, bool, String),
    net: &Network,
    ingress: u32,
    input: &Translatable<'_>,
    output: &[u8],
) -> Result<(), String> {
    let interface_mac = net
        .interface_mac(ingress)
        .ok_or_else(|| format!("answered on ifindex {ingress}, whose MAC the program was not told"))?;
    expect(
        "destination MAC",
        output[..6] == input.frame[6..12],
        mac_text(&output[..6]),
    );
    expect(
        "source MAC (must be the interface's)",
        output[6..12] == interface_mac,
        mac_text(&output[6..12]),
    );
    expect(
        "source",
        endpoint(output, 26, L4_AT) == input.dst(),
        endpoint(output, 26, L4_AT).to_string(),
    );
    expect(
        "destination",
        endpoint(output, 30, L4_AT + 2) == input.src(),
        endpoint(output, 30, L4_AT + 2).to_string(),
    );
    Ok(())
}

/// Whether `output` is what the SYN proxy makes of `input` (a cookie SYN-ACK
/// for a SYN, a SYN for an ACK), which no translation does: a translation
/// keeps the flags.
fn is_syn_proxy_frame(input: &Translatable<'_>, output: &[u8]) -> bool {
    let flags = input.tcp_flags();
    output.len() > L4_AT + 13
        && ((opens_connection(flags) && output[L4_AT + 13] == SYN | ACK)
            || (flags & (SYN | ACK | RST) == ACK && output[L4_AT + 13] == SYN))
}

/// What a service with SYN cookies may do with a segment of no connection
/// it knows (`input`): answer a SYN with a cookie SYN-ACK, or send a
/// backend the client's SYN for an ACK of a cookie.
fn check_cookie(
    net: &Network,
    ingress: u32,
    input: &Translatable<'_>,
    service: &ServiceSpec,
    output: &[u8],
    egress: Egress,
) -> Result<Checked, String> {
    let frame = input.frame;
    let flags = input.tcp_flags();
    if !verifies(ones_sum(&frame[14..34])) {
        return Err("answered or opened on a segment whose IPv4 header checksum is wrong".into());
    }
    const LEN: usize = L4_AT + 32;
    if output.len() != LEN {
        return Err(format!(
            "a SYN-proxy frame of {} bytes, not {LEN} (headers and 12 bytes of options)",
            output.len()
        ));
    }
    let mut wrong = Vec::new();
    let mut expect = |what: &str, ok: bool, got: String| {
        if !ok {
            wrong.push(format!("{what} {got}"));
        }
    };
    expect_built_segment(&mut expect, output, 32);
    // MSS (one of Linux's four cookie values), window scale or NOPs,
    // then NOPs: never SACK-permitted or timestamps.
    let options = &output[L4_AT + 20..];
    expect(
        "options",
        options[..2] == [2, 4]
            && [536, 1300, 1440, 1460].contains(&be16(options, 2))
            && (options[4..8] == [1, 1, 1, 1] || (options[4..7] == [1, 3, 3] && options[7] <= 14))
            && options[8..] == [1, 1, 1, 1],
        hex(options),
    );
    let kind = if opens_connection(flags) && output[47] == SYN | ACK {
        // The cookie SYN-ACK: back where the SYN came from, from the
        // service to the client, acknowledging the SYN alone.
        if egress != Egress::Direct {
            return Err("a cookie SYN-ACK handed to the kernel".into());
        }
        if input.l4_residue(frame) != 0 {
            return Err("answered a SYN whose TCP checksum is wrong with a cookie".into());
        }
        let header_len = usize::from(frame[L4_AT + 12] >> 4) * 4;
        if input.checked_len != header_len {
            return Err("answered a SYN carrying data with a cookie".into());
        }
        expect_sent_back(&mut expect, net, ingress, input, output)?;
        let expected_ack = be32(frame, L4_AT + 4).wrapping_add(1);
        expect(
            &format!("acknowledgment (SEG.SEQ + 1 = {expected_ack})"),
            be32(output, 42) == expected_ack,
            be32(output, 42).to_string(),
        );
        expect(
            "MSS announced",
            be16(options, 2) == 1460,
            be16(options, 2).to_string(),
        );
        Kind::CookieAnswer
    } else if flags & (SYN | ACK | RST) == ACK && output[47] == SYN {
        // The client's answer to a cookie: its SYN, to a backend.
        let (out_src, out_dst) = (endpoint(output, 26, L4_AT), endpoint(output, 30, L4_AT + 2));
        expect(
            "source (a SNAT address)",
            net.snat_addrs.contains(out_src.ip()),
            out_src.to_string(),
        );
        expect(
            &format!("destination (an active backend of {:?})", service.name),
            service.takes(out_dst),
            out_dst.to_string(),
        );
        let client_isn = be32(frame, L4_AT + 4).wrapping_sub(1);
        expect(
            &format!("sequence number (the client's ISN, {client_isn})"),
            be32(output, 38) == client_isn,
            be32(output, 38).to_string(),
        );
        if egress == Egress::Direct {
            let (mac, via) = net
                .neighbour(*out_dst.ip())
                .ok_or_else(|| format!("sent a SYN to {out_dst}, which has no neighbour entry"))?;
            expect("destination MAC", output[..6] == mac, mac_text(&output[..6]));
            expect("source MAC", output[6..12] == via, mac_text(&output[6..12]));
        }
        if wrong.is_empty() {
            return Ok(Checked {
                kind: Kind::CookieOpen,
                mapping: Some(Mapping {
                    proto: TCP,
                    client: input.src(),
                    service: input.dst(),
                    snat: out_src,
                    backend: out_dst,
                }),
                opens: true,
                answered_opening: None,
            });
        }
        Kind::CookieOpen
    } else {
        return Err(format!(
            "sent a frame with flags {} for a segment with flags {} to a service with SYN cookies",
            flags_text(output[47]),
            flags_text(flags)
        ));
    };
    if !wrong.is_empty() {
        return Err(format!("the {}'s {}", kind.name(), wrong.join(", ")));
    }
    Ok(Checked::plain(kind))
}

/// The violations of "every frame counted once, in its outcome's group"
/// over a batch; `tally` counts the batch's frames by [`Kind::index`]
/// (rejected ones by [`apparent_kind`]).
fn counter_violations(
    before: &[(String, u64)],
    after: &[(String, u64)],
    frames: u64,
    tally: &[u64; Kind::ALL.len()],
) -> Vec<String> {
    let mut violations = Vec::new();
    let mut counted = 0_u64;
    let mut by_group: HashMap<&str, u64> = HashMap::new();
    for ((name, after), (_, before)) in after.iter().zip(before) {
        let delta = after.wrapping_sub(*before);
        counted = counted.wrapping_add(delta);
        match counter_group(name) {
            Some(group) => *by_group.entry(group).or_default() += delta,
            None if delta != 0 => violations.push(format!(
                "counter {name} went up by {delta}, an outcome the fuzz fixture cannot have"
            )),
            None => {}
        }
    }
    if counted != frames {
        violations.push(format!(
            "the global counters went up by {counted} over a batch of {frames} frames: each frame must be \
             counted exactly once"
        ));
    }
    let mut seen_by_group: HashMap<&str, u64> = HashMap::new();
    for kind in Kind::ALL {
        *seen_by_group.entry(kind.counter_group()).or_default() += tally[kind.index()];
    }
    let mut groups: Vec<&str> = seen_by_group.keys().chain(by_group.keys()).copied().collect();
    groups.sort_unstable();
    groups.dedup();
    for group in groups {
        let (seen, counted) = (
            seen_by_group.get(group).copied().unwrap_or(0),
            by_group.get(group).copied().unwrap_or(0),
        );
        if seen != counted {
            violations.push(format!(
                "{seen} frames {group} in a batch, but its counters went up by {counted}"
            ));
        }
    }
    violations
}

/// The outcome a rejected frame seems to have, going by the program's
/// action and output: the group its counters should show it in.
fn apparent_kind(net: &Network, input: &[u8], action: u32, output: &[u8]) -> Kind {
    let headers = input.len() >= L4_AT && output.len() >= L4_AT;
    let from_snat = headers && net.snat_addrs.contains(&Ipv4Addr::from(be32(output, 26)));
    match action {
        XDP_DROP | XDP_ABORTED => Kind::Drop,
        XDP_PASS if output == input => Kind::PassUntouched,
        XDP_PASS if from_snat => Kind::ForwardToKernel,
        XDP_PASS => Kind::ReplyToKernel,
        _ if output.len() == input.len() && output.len() >= 12 && output[12..] == input[12..] => {
            Kind::Handoff
        }
        _ if looks_like_frag_needed(output) => Kind::FragNeeded,
        _ if headers && output[26..30] == input[30..34] && output[30..34] == input[26..30] => Kind::Refusal,
        _ if from_snat => Kind::Forward,
        _ => Kind::Reply,
    }
}

// ---- bytes ---------------------------------------------------------------

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn endpoint(frame: &[u8], addr_at: usize, port_at: usize) -> SocketAddrV4 {
    let a = &frame[addr_at..addr_at + 4];
    SocketAddrV4::new(Ipv4Addr::new(a[0], a[1], a[2], a[3]), be16(frame, port_at))
}

/// RFC 1071: the sum of big-endian 16-bit words (an odd last byte padded
/// with zero), unfolded.
fn ones_sum(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(2);
    let mut sum: u64 = chunks
        .by_ref()
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Whether a region (checksum field included) summing to `sum` verifies:
/// its ones' complement sum is 0xffff, i.e. `sum` is 0 modulo 0xffff (an
/// all-zero region, the only other case, never occurs here).
fn verifies(sum: u64) -> bool {
    sum.is_multiple_of(0xffff)
}

/// The checksum field value that makes a region summing to `sum` (with the
/// field zero) verify.
fn checksum_of(sum: u64) -> u16 {
    let mut folded = sum;
    while folded >> 16 != 0 {
        folded = (folded & 0xffff) + (folded >> 16);
    }
    !(folded as u16)
}

fn residue_text(residue: u16) -> String {
    if residue == 0 {
        "right".into()
    } else {
        format!("wrong (off by {residue:#06x})")
    }
}

fn field_name(at: usize, proto: u8) -> &'static str {
    match at {
        0..=5 => "the destination MAC",
        6..=11 => "the source MAC",
        12 | 13 => "the EtherType",
        14 => "the IPv4 version and header length",
        15 => "the IPv4 TOS",
        16 | 17 => "the IPv4 total length",
        18 | 19 => "the IPv4 identification",
        20 | 21 => "the IPv4 flags and fragment offset",
        22 => "the TTL",
        23 => "the IPv4 protocol",
        24 | 25 => "the IPv4 header checksum",
        26..=33 => "the IPv4 addresses",
        34..=37 => "the ports",
        _ if proto == TCP => match at - L4_AT {
            4..=7 => "the TCP sequence number",
            8..=11 => "the TCP acknowledgment number",
            12 | 13 => "the TCP data offset and flags",
            14 | 15 => "the TCP window",
            16 | 17 => "the TCP checksum",
            18 | 19 => "the TCP urgent pointer",
            _ => "the TCP options or payload",
        },
        _ => match at - L4_AT {
            4 | 5 => "the UDP length",
            6 | 7 => "the UDP checksum",
            _ => "the UDP payload",
        },
    }
}

fn mac_text(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn flags_text(flags: u8) -> String {
    let names = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    let set: Vec<&str> = (0..8)
        .filter(|bit| flags & (1 << bit) != 0)
        .map(|bit| names[bit])
        .collect();
    if set.is_empty() {
        "none".into()
    } else {
        set.join("|")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn action_name(action: u32) -> String {
    match action {
        XDP_ABORTED => "XDP_ABORTED".into(),
        XDP_DROP => "XDP_DROP".into(),
        XDP_PASS => "XDP_PASS".into(),
        XDP_TX => "XDP_TX".into(),
        XDP_REDIRECT => "XDP_REDIRECT".into(),
        other => format!("action {other}"),
    }
}

/// Sets the IPv4 header checksum and the TCP, UDP or ICMP checksum of
/// `frame`, as far as its (possibly mutated) headers say where they are and
/// the frame holds them. A zero UDP checksum ("none") stays zero.
fn fix_checksums(frame: &mut [u8]) {
    if frame.len() < L4_AT || be16(frame, 12) != 0x0800 {
        return;
    }
    let header_len = usize::from(frame[14] & 0x0f) * 4;
    if header_len < 20 || 14 + header_len > frame.len() {
        return;
    }
    frame[24..26].fill(0);
    let check = checksum_of(ones_sum(&frame[14..14 + header_len]));
    frame[24..26].copy_from_slice(&check.to_be_bytes());
    let total = usize::from(be16(frame, 16));
    if total < header_len || 14 + total > frame.len() {
        return;
    }
    let (l4_at, l4_len) = (14 + header_len, total - header_len);
    let pseudo = |frame: &[u8], len: usize| ones_sum(&frame[26..34]) + u64::from(frame[23]) + len as u64;
    let (checksum_at, len, pseudo_sum) = match frame[23] {
        TCP if l4_len >= 20 => (16, l4_len, pseudo(frame, l4_len)),
        UDP if l4_len >= 8 => {
            if be16(frame, l4_at + 6) == 0 {
                return;
            }
            let udp_len = usize::from(be16(frame, l4_at + 4));
            let len = if (8..=l4_len).contains(&udp_len) {
                udp_len
            } else {
                l4_len
            };
            (6, len, pseudo(frame, len))
        }
        ICMP if l4_len >= 4 => (2, l4_len, 0),
        _ => return,
    };
    let at = l4_at + checksum_at;
    frame[at..at + 2].fill(0);
    let mut check = checksum_of(pseudo_sum + ones_sum(&frame[l4_at..l4_at + len]));
    if frame[23] == UDP && check == 0 {
        check = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&check.to_be_bytes());
}

// ---- generating frames ---------------------------------------------------

/// SplitMix64 (Steele, Lea and Flood, 2014): tiny, fast, and any seed gives
/// a good stream; a fuzzer needs nothing more than reproducibility.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    fn inclusive(&mut self, low: usize, high: usize) -> usize {
        low + self.index(high - low + 1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn u16(&mut self) -> u16 {
        self.next() as u16
    }

    fn u32(&mut self) -> u32 {
        self.next() as u32
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }
}

/// An IPv4 packet in an Ethernet frame, to build.
#[derive(Clone, Debug)]
struct Datagram {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    tos: u8,
    id: u16,
    /// Flags and fragment offset.
    fragment: u16,
    ttl: u8,
    proto: u8,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    tcp_flags: u8,
    window: u16,
    urgent: u16,
    /// Padded to a multiple of 4 bytes, at most 40.
    tcp_options: Vec<u8>,
    /// The L4 payload; for protocols other than TCP and UDP, the whole IP payload.
    payload: Vec<u8>,
    udp_checksum: bool,
}

const DONT_FRAGMENT: u16 = 0x4000;

impl Datagram {
    fn tcp(src: SocketAddrV4, dst: SocketAddrV4, tcp_flags: u8) -> Self {
        Self {
            dst_mac: [0; 6],
            src_mac: CLIENT_MAC,
            tos: 0,
            id: 0x1234,
            fragment: DONT_FRAGMENT,
            ttl: 64,
            proto: TCP,
            src,
            dst,
            seq: 0,
            ack: 0,
            tcp_flags,
            window: 64_240,
            urgent: 0,
            tcp_options: Vec::new(),
            payload: Vec::new(),
            udp_checksum: true,
        }
    }

    fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: Vec<u8>) -> Self {
        Self {
            proto: UDP,
            payload,
            ..Self::tcp(src, dst, 0)
        }
    }

    fn other(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, payload: Vec<u8>) -> Self {
        Self {
            proto,
            payload,
            ..Self::tcp(SocketAddrV4::new(src, 0), SocketAddrV4::new(dst, 0), 0)
        }
    }

    fn build(&self) -> Vec<u8> {
        let mut l4 = Vec::with_capacity(60 + self.payload.len());
        match self.proto {
            TCP => {
                let mut options = self.tcp_options.clone();
                options.truncate(40);
                options.resize(options.len().div_ceil(4) * 4, 0);
                l4.extend_from_slice(&self.src.port().to_be_bytes());
                l4.extend_from_slice(&self.dst.port().to_be_bytes());
                l4.extend_from_slice(&self.seq.to_be_bytes());
                l4.extend_from_slice(&self.ack.to_be_bytes());
                l4.push((((20 + options.len()) / 4) << 4) as u8);
                l4.push(self.tcp_flags);
                l4.extend_from_slice(&self.window.to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
                l4.extend_from_slice(&self.urgent.to_be_bytes());
                l4.extend_from_slice(&options);
            }
            UDP => {
                l4.extend_from_slice(&self.src.port().to_be_bytes());
                l4.extend_from_slice(&self.dst.port().to_be_bytes());
                l4.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                // A placeholder that fix_checksums replaces; zero stays "none".
                l4.extend_from_slice(if self.udp_checksum { &[0xff, 0xff] } else { &[0, 0] });
            }
            _ => {}
        }
        l4.extend_from_slice(&self.payload);
        let mut frame = Vec::with_capacity(34 + l4.len());
        frame.extend_from_slice(&self.dst_mac);
        frame.extend_from_slice(&self.src_mac);
        frame.extend_from_slice(&0x0800_u16.to_be_bytes());
        frame.extend_from_slice(&[0x45, self.tos]);
        frame.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        frame.extend_from_slice(&self.id.to_be_bytes());
        frame.extend_from_slice(&self.fragment.to_be_bytes());
        frame.extend_from_slice(&[self.ttl, self.proto, 0, 0]);
        frame.extend_from_slice(&self.src.ip().octets());
        frame.extend_from_slice(&self.dst.ip().octets());
        frame.extend_from_slice(&l4);
        fix_checksums(&mut frame);
        frame
    }
}

/// The options a Linux client puts in its SYN (MSS, SACK permitted,
/// timestamps, window scale 7).
fn syn_options(rng: &mut Rng) -> Vec<u8> {
    let mut options = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10];
    options.extend_from_slice(&rng.u32().to_be_bytes());
    options.extend_from_slice(&[0, 0, 0, 0, 1, 3, 3, 7]);
    options
}

/// Well-formed TCP options in a random mix.
fn random_options(rng: &mut Rng) -> Vec<u8> {
    let mut options = Vec::new();
    for _ in 0..rng.inclusive(1, 6) {
        match rng.below(7) {
            0 => options.push(1), // NOP
            1 => options.extend_from_slice(&[2, 4, rng.byte(), rng.byte()]),
            2 => options.extend_from_slice(&[3, 3, rng.byte() % 16]),
            3 => options.extend_from_slice(&[4, 2]),
            4 => {
                options.extend_from_slice(&[8, 10]);
                options.extend_from_slice(&rng.bytes(8));
            }
            5 => {
                let blocks = rng.inclusive(1, 3);
                options.extend_from_slice(&[5, (2 + 8 * blocks) as u8]);
                options.extend(rng.bytes(8 * blocks));
            }
            _ => options.push(0), // EOL
        }
    }
    options.truncate(40);
    options
}

/// TCP options that lie about their lengths.
fn malformed_options(rng: &mut Rng) -> Vec<u8> {
    let mut options = match rng.below(4) {
        0 => vec![2, 0],       // length 0: an endless loop for a naive parser
        1 => vec![8, 1, 0, 0], // length below the kind-and-length bytes
        2 => vec![1, 1, 8, 40, 0, 0],
        _ => {
            let len = rng.inclusive(1, 40);
            rng.bytes(len)
        }
    };
    options.resize(rng.inclusive(options.len(), 40), rng.byte());
    options
}

const OTHER_HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
/// The VRRP peer's MAC, in the batches that have one.
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];
/// Whether TCP `flags` open a connection (RFC 9293 §3.10.7.1: a SYN with
/// ACK, RST or FIN does not; written here from the RFC, not taken from
/// the program's code).
fn opens_connection(flags: u8) -> bool {
    flags & (SYN | ACK | RST | FIN) == SYN
}

const MULTICAST_MAC: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12];
const LOOPBACK_IFINDEX: u32 = 1;

/// The stage of a tracked connection's handshake, as the fuzzer drives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Nothing sent (or the connection was lost): next is the SYN (UDP: the first datagram).
    Closed,
    /// The SYN was forwarded: next is the backend's SYN-ACK.
    SynSent,
    /// The SYN-ACK came back: next is the client's ACK.
    SynAcked,
    Open,
}

/// A connection the fuzzer keeps alive, so that mutated frames of tracked
/// flows meet their entries.
#[derive(Clone, Debug)]
struct Conn {
    proto: u8,
    client: SocketAddrV4,
    service: SocketAddrV4,
    /// The SNAT tuple and backend of its latest forward translation.
    via: Option<(SocketAddrV4, SocketAddrV4)>,
    stage: Stage,
    /// The next sequence number each side sends.
    client_seq: u32,
    backend_seq: u32,
}

/// What an unmutated frame of a connection does to it when translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Open,
    SynAck,
    HandshakeAck,
    ClientData(u32),
    BackendData(u32),
}

/// A frame to run, and where it came from.
struct Case {
    seed: &'static str,
    frame: Vec<u8>,
    ingress: u32,
    mutations: Vec<&'static str>,
    conn: Option<(usize, Step)>,
}

/// A seed before mutation.
enum Body {
    Packet(Datagram),
    Raw(Vec<u8>),
}

struct Seed {
    name: &'static str,
    body: Body,
    ingress: u32,
    conn: Option<(usize, Step)>,
}

const SEEDS: [(&str, u64); 13] = [
    ("tcp_client", 22),
    ("tcp_backend", 16),
    ("udp_client", 8),
    ("udp_backend", 6),
    ("new_syn", 12),
    ("cookie_answer", 3),
    ("empty_pool", 4),
    ("new_udp", 3),
    ("no_flow_segment", 4),
    ("stray_reply", 3),
    ("not_service", 12),
    ("not_ipv4", 6),
    ("garbage", 4),
];

/// The fuzzer's state: the fixture, the checker's knowledge, the tracked
/// connections and the tallies.
struct Fuzzer<'a> {
    fx: &'a Fixture,
    net: Network,
    /// Whether every other batch has a VRRP peer to hand segments to.
    peer: Option<lb_user::dataplane::PeerHandoffMap>,
    rng: Rng,
    seed: u64,
    conns: Vec<Conn>,
    conn_by_tuple: HashMap<(u8, SocketAddrV4, SocketAddrV4), usize>,
    next_client_port: u16,
    seen: Translations,
    outcomes: [u64; Kind::ALL.len()],
    inputs: HashMap<String, u64>,
    frames: u64,
    bad: u64,
    bad_frames: u64,
    bad_reasons: HashMap<String, u64>,
    /// The latest cookie SYN-ACKs: (client, service, the client's next
    /// sequence number, the acknowledgement that answers the cookie).
    cookies: Vec<(SocketAddrV4, SocketAddrV4, u32, u32)>,
    first_bad: Vec<String>,
}

/// A client on the public subnet without a neighbour entry: replies to it
/// are translated, then handed to the kernel to resolve its MAC.
const UNRESOLVED_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);

/// Client ports of the tracked connections (each reopened connection takes
/// the next); new-connection seeds use [`NEW_CLIENT_PORTS`].
const CONN_CLIENT_PORTS: (u16, u16) = (40_000, 49_999);
const NEW_CLIENT_PORTS: (u16, u16) = (50_000, 51_023);

impl<'a> Fuzzer<'a> {
    fn new(fx: &'a Fixture, services: Vec<ServiceSpec>, seed: u64) -> Self {
        let net = Network::of_fixture(
            services,
            (fx.public_ifindex, fx.public_mac),
            (fx.private_ifindex, fx.private_mac),
        );
        let mut fuzzer = Self {
            fx,
            net,
            peer: None,
            rng: Rng(seed),
            seed,
            conns: Vec::new(),
            conn_by_tuple: HashMap::new(),
            next_client_port: CONN_CLIENT_PORTS.0,
            seen: Translations::default(),
            outcomes: [0; Kind::ALL.len()],
            inputs: HashMap::new(),
            frames: 0,
            bad: 0,
            bad_frames: 0,
            bad_reasons: HashMap::new(),
            first_bad: Vec::new(),
            cookies: Vec::new(),
        };
        let [first, second] = CLIENT_ADDRS;
        let tracked = [
            (TCP, VIP, FRONTEND_PORT, 6, [first, second]),
            (TCP, ANCHOR, FRONTEND_PORT, 2, [first, second]),
            (TCP, VIP, API_PORT, 3, [first, second]),
            (TCP, ANCHOR, API_PORT, 1, [first, second]),
            (TCP, VIP, HAIRPIN_PORT, 2, [first, second]),
            (TCP, VIP, UNRESOLVED_PORT, 2, [first, second]),
            (TCP, VIP, FRONTEND_PORT, 2, [UNRESOLVED_CLIENT; 2]),
            (UDP, VIP, UDP_PORT, 6, [first, second]),
            (UDP, VIP, UDP_PORT, 1, [UNRESOLVED_CLIENT; 2]),
        ];
        for (proto, addr, port, count, clients) in tracked {
            for _ in 0..count {
                let conn = Conn {
                    proto,
                    client: SocketAddrV4::new(clients[fuzzer.conns.len() % 2], 0),
                    service: SocketAddrV4::new(addr, port),
                    via: None,
                    stage: Stage::Closed,
                    client_seq: 0,
                    backend_seq: 0,
                };
                fuzzer.conns.push(conn);
                fuzzer.restart(fuzzer.conns.len() - 1);
            }
        }
        fuzzer
    }

    /// Gives connection `i` the next client port (a tuple not used for a
    /// while, so that its SYN opens a connection) and new sequence numbers.
    fn restart(&mut self, i: usize) {
        let port = self.next_client_port;
        self.next_client_port = if port >= CONN_CLIENT_PORTS.1 {
            CONN_CLIENT_PORTS.0
        } else {
            port + 1
        };
        let conn = &mut self.conns[i];
        self.conn_by_tuple
            .remove(&(conn.proto, conn.client, conn.service));
        conn.client.set_port(port);
        conn.via = None;
        conn.stage = Stage::Closed;
        conn.client_seq = self.rng.u32();
        conn.backend_seq = self.rng.u32();
        self.conn_by_tuple
            .insert((conn.proto, conn.client, conn.service), i);
    }

    fn run(mut self, frames: u64) -> anyhow::Result<FuzzReport> {
        let start = Instant::now();
        let fx = self.fx;
        let mut dataplane = fx
            .dataplane
            .lock()
            .map_err(|_| anyhow::anyhow!("the fixture's data plane lock is poisoned"))?;
        let names = |counters: Vec<(lb_common::stats::Counter, u64)>| -> Vec<(String, u64)> {
            counters
                .into_iter()
                .map(|(c, n)| (c.name().to_owned(), n))
                .collect()
        };
        self.peer = Some(dataplane.take_peer_handoff().context("the peer handoff map")?);
        let mut counters: Vec<(String, u64)> = Vec::new();
        let mut done = 0;
        while done < frames {
            let batch = BATCH.min(frames - done);
            self.set_peer(done / BATCH % 2 == 1)?;
            let before = names(dataplane.counters().context("reading the global counters")?);
            let mut tally = [0_u64; Kind::ALL.len()];
            for _ in 0..batch {
                let case = self.next_case();
                let program = dataplane.program().context("the loaded program")?;
                let (action, output) = test_run(program, &case.frame, case.ingress)?;
                self.frames += 1;
                match check(&self.net, &self.seen, case.ingress, &case.frame, action, &output) {
                    Ok(checked) => {
                        tally[checked.kind.index()] += 1;
                        self.seen.record(&checked);
                        self.learn(&case, &checked);
                        if checked.kind == Kind::CookieAnswer {
                            self.remember_cookie(&output);
                        }
                    }
                    Err(why) => {
                        self.bad_frames += 1;
                        tally[apparent_kind(&self.net, &case.frame, action, &output).index()] += 1;
                        let description = if self.first_bad.len() < DESCRIBED {
                            self.describe(&case, action, &output, &why)
                        } else {
                            String::new() // not kept: spare the hex
                        };
                        self.flag(&why, description);
                    }
                }
            }
            let after = names(dataplane.counters().context("reading the global counters")?);
            for violation in counter_violations(&before, &after, batch, &tally) {
                let description = format!(
                    "frames {done}..{} of seed {:#x}: {violation}",
                    done + batch,
                    self.seed
                );
                self.flag(&violation, description);
            }
            for (total, n) in self.outcomes.iter_mut().zip(tally) {
                *total += n;
            }
            if counters.is_empty() {
                counters = after.iter().map(|(name, _)| (name.clone(), 0)).collect();
            }
            for ((_, total), ((_, after), (_, before))) in counters.iter_mut().zip(after.iter().zip(&before))
            {
                *total += after.wrapping_sub(*before);
            }
            done += batch;
        }
        let mut inputs: Vec<(String, u64)> = self.inputs.into_iter().collect();
        inputs.sort();
        let mut bad_reasons: Vec<(String, u64)> = self.bad_reasons.into_iter().collect();
        bad_reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut outcomes: Vec<(String, u64)> = Kind::ALL
            .iter()
            .map(|kind| (kind.name().to_owned(), self.outcomes[kind.index()]))
            .collect();
        outcomes.push(("bad".to_owned(), self.bad_frames));
        Ok(FuzzReport {
            frames: self.frames,
            elapsed: start.elapsed(),
            outcomes,
            inputs,
            bad: self.bad,
            bad_reasons,
            counters,
            first_bad: self.first_bad,
        })
    }

    /// A rejected frame, for the report: why, what it was and became, in
    /// hex, and where to find it again (`run` with the same seed).
    fn describe(&self, case: &Case, action: u32, output: &[u8], why: &str) -> String {
        format!(
            "frame {} of seed {:#x}: {why}\n  seed {}, mutations [{}], ifindex {}\n  input  ({} bytes): {}\n  \
             output ({} bytes, {}): {}",
            self.frames - 1,
            self.seed,
            case.seed,
            case.mutations.join(", "),
            case.ingress,
            case.frame.len(),
            hex(&case.frame),
            output.len(),
            action_name(action),
            hex(output)
        )
    }

    /// Configures a VRRP peer on the public interface, or none.
    fn set_peer(&mut self, enabled: bool) -> anyhow::Result<()> {
        let (ifindex, own_mac) = (self.fx.public_ifindex, self.fx.public_mac);
        let handoff = enabled.then_some(lb_common::maps::PeerHandoff {
            peer_mac: PEER_MAC,
            own_mac,
            ifindex,
            enabled: 1,
        });
        if let Some(map) = &mut self.peer {
            map.set(handoff).context("setting the VRRP peer")?;
        }
        self.net.peer = enabled.then_some((ifindex, PEER_MAC));
        Ok(())
    }

    /// Records a rejection: `why` as the checker said it, `description`
    /// with where it happened.
    fn flag(&mut self, why: &str, description: String) {
        self.bad += 1;
        *self.bad_reasons.entry(reason_of(why)).or_default() += 1;
        if self.first_bad.len() < DESCRIBED {
            self.first_bad.push(description);
        }
    }

    /// Keeps the cookie of a SYN-ACK the program answered with (`answer`),
    /// for the client's answer to it (the "cookie_answer" seed).
    fn remember_cookie(&mut self, answer: &[u8]) {
        const REMEMBERED: usize = 64;
        let service = endpoint(answer, 26, L4_AT);
        let client = endpoint(answer, 30, L4_AT + 2);
        let (cookie, next_seq) = (be32(answer, L4_AT + 4), be32(answer, L4_AT + 8));
        self.cookies
            .push((client, service, next_seq, cookie.wrapping_add(1)));
        if self.cookies.len() > REMEMBERED {
            self.cookies.remove(0);
        }
    }

    /// Follows the tracked connections through what the program did.
    fn learn(&mut self, case: &Case, checked: &Checked) {
        if let (Some(m), Kind::Forward | Kind::ForwardToKernel) = (checked.mapping, checked.kind) {
            if let Some(&i) = self.conn_by_tuple.get(&(m.proto, m.client, m.service)) {
                self.conns[i].via = Some((m.snat, m.backend));
            }
        }
        let Some((i, step)) = case.conn else { return };
        if !case.mutations.is_empty() {
            return;
        }
        if !checked.kind.rewrites() {
            // An intact frame of the connection was not translated: the
            // program no longer tracks it (evicted, expired, or closed by a
            // mutated frame). Start over on a new tuple.
            self.restart(i);
            return;
        }
        let conn = &mut self.conns[i];
        match step {
            Step::Open if conn.proto == UDP => conn.stage = Stage::Open,
            Step::Open => {
                conn.stage = Stage::SynSent;
                conn.client_seq = conn.client_seq.wrapping_add(1);
            }
            Step::SynAck => {
                conn.stage = Stage::SynAcked;
                conn.backend_seq = conn.backend_seq.wrapping_add(1);
            }
            Step::HandshakeAck => conn.stage = Stage::Open,
            Step::ClientData(len) => conn.client_seq = conn.client_seq.wrapping_add(len),
            Step::BackendData(len) => conn.backend_seq = conn.backend_seq.wrapping_add(len),
        }
    }

    fn next_case(&mut self) -> Case {
        let roll = self.rng.below(SEEDS.iter().map(|(_, w)| w).sum());
        let mut acc = 0;
        let name = SEEDS
            .iter()
            .find(|(_, weight)| {
                acc += weight;
                roll < acc
            })
            .map_or("garbage", |(name, _)| *name);
        let seed = self.seed_frame(name);
        self.mutate(seed)
    }

    fn client_frame(&self, d: Datagram) -> Body {
        Body::Packet(Datagram {
            dst_mac: self.fx.public_mac,
            src_mac: CLIENT_MAC,
            ..d
        })
    }

    /// The interface a backend's frames arrive on, and the MACs they carry.
    fn backend_side(&self, backend: Ipv4Addr) -> (u32, [u8; 6], [u8; 6]) {
        match self.net.neighbour(backend) {
            Some((mac, via)) if via == self.fx.public_mac => (self.fx.public_ifindex, via, mac),
            Some((mac, _)) => (self.fx.private_ifindex, self.fx.private_mac, mac),
            None => (
                self.fx.private_ifindex,
                self.fx.private_mac,
                [0x02, 0, 0, 0, 0, 0x13],
            ),
        }
    }

    fn random_payload(&mut self, max: usize) -> Vec<u8> {
        let len = if self.rng.percent(20) {
            0
        } else {
            self.rng.inclusive(1, max)
        };
        self.rng.bytes(len)
    }

    fn seed_frame(&mut self, name: &'static str) -> Seed {
        let public = self.fx.public_ifindex;
        let seed = |body, ingress| Seed {
            name,
            body,
            ingress,
            conn: None,
        };
        match name {
            "tcp_client" | "tcp_backend" | "udp_client" | "udp_backend" => {
                let proto = if name.starts_with("tcp") { TCP } else { UDP };
                let candidates: Vec<usize> = (0..self.conns.len())
                    .filter(|i| self.conns[*i].proto == proto)
                    .collect();
                let i = self.rng.pick(&candidates);
                self.conn_frame(i, name.ends_with("backend"), name)
            }
            "new_syn" | "empty_pool" => {
                let tcp_services: Vec<SocketAddrV4> = self
                    .net
                    .services
                    .iter()
                    .filter(|s| s.proto == TCP && (s.has_active_backend() == (name == "new_syn")))
                    .flat_map(ServiceSpec::endpoints)
                    .collect();
                let empty_udp: Vec<SocketAddrV4> = self
                    .net
                    .services
                    .iter()
                    .filter(|s| s.proto == UDP && !s.has_active_backend())
                    .flat_map(ServiceSpec::endpoints)
                    .collect();
                let client = self.new_client();
                if name == "empty_pool" && self.rng.percent(25) {
                    let to = self.rng.pick(&empty_udp);
                    let payload = self.random_payload(200);
                    return seed(self.client_frame(Datagram::udp(client, to, payload)), public);
                }
                let to = self.rng.pick(&tcp_services);
                let mut syn = Datagram::tcp(client, to, SYN);
                syn.seq = self.rng.u32();
                syn.tcp_options = syn_options(&mut self.rng);
                seed(self.client_frame(syn), public)
            }
            "new_udp" => {
                let client = self.new_client();
                let payload = self.random_payload(600);
                let udp = Datagram::udp(client, SocketAddrV4::new(VIP, UDP_PORT), payload);
                seed(self.client_frame(udp), public)
            }
            "no_flow_segment" => {
                let client = self.new_client();
                let to = SocketAddrV4::new(
                    self.rng.pick(&[VIP, ANCHOR]),
                    self.rng.pick(&[FRONTEND_PORT, API_PORT]),
                );
                let mut segment = Datagram::tcp(
                    client,
                    to,
                    self.rng.pick(&[ACK, ACK | PSH, FIN | ACK, RST, RST | ACK]),
                );
                segment.seq = self.rng.u32();
                segment.ack = self.rng.u32();
                segment.payload = self.random_payload(300);
                seed(self.client_frame(segment), public)
            }
            "cookie_answer" if !self.cookies.is_empty() => {
                // The client's ACK of a cookie, now and then with its
                // request on it.
                let (client, service, seq, ack) = self.rng.pick(&self.cookies);
                let mut answer = Datagram::tcp(client, service, ACK);
                answer.seq = seq;
                answer.ack = ack;
                if self.rng.percent(30) {
                    answer.tcp_flags |= PSH;
                    answer.payload = self.random_payload(300);
                }
                seed(self.client_frame(answer), public)
            }
            "cookie_answer" => {
                // No cookie yet: ask for one.
                let client = self.new_client();
                let mut syn = Datagram::tcp(client, SocketAddrV4::new(VIP, GUARDED_PORT), SYN);
                syn.seq = self.rng.u32();
                syn.tcp_options = syn_options(&mut self.rng);
                seed(self.client_frame(syn), public)
            }
            "stray_reply" => {
                let backend = self.rng.pick(&[
                    SocketAddrV4::new(WEB_ADDRS[0], FRONTEND_PORT),
                    SocketAddrV4::new(WEB_ADDRS[1], API_PORT),
                    SocketAddrV4::new(WEB_ADDRS[0], UDP_PORT),
                    SocketAddrV4::new(PUBLIC_BACKEND, HAIRPIN_PORT),
                ]);
                let to = SocketAddrV4::new(LB_PRIVATE, self.rng.u16());
                let mut reply = if backend.port() == UDP_PORT {
                    Datagram::udp(backend, to, self.random_payload(300))
                } else {
                    let mut segment = Datagram::tcp(backend, to, self.rng.pick(&[ACK, SYN | ACK, RST]));
                    segment.seq = self.rng.u32();
                    segment.ack = self.rng.u32();
                    segment
                };
                let (ingress, dst_mac, src_mac) = self.backend_side(*backend.ip());
                reply.dst_mac = dst_mac;
                reply.src_mac = src_mac;
                seed(Body::Packet(reply), ingress)
            }
            "not_service" => {
                let body = self.not_service();
                seed(body, public)
            }
            "not_ipv4" => {
                let body = Body::Raw(self.not_ipv4());
                seed(body, public)
            }
            _ => {
                let len = self.rng.inclusive(MIN_FRAME, 200);
                let mut frame = self.rng.bytes(len);
                if self.rng.percent(60) && len >= 15 {
                    frame[..6].copy_from_slice(&self.fx.public_mac);
                    frame[12..15].copy_from_slice(&[0x08, 0x00, 0x45]);
                }
                seed(Body::Raw(frame), public)
            }
        }
    }

    fn new_client(&mut self) -> SocketAddrV4 {
        let port = self
            .rng
            .inclusive(usize::from(NEW_CLIENT_PORTS.0), usize::from(NEW_CLIENT_PORTS.1));
        SocketAddrV4::new(self.rng.pick(&CLIENT_ADDRS), port as u16)
    }

    /// The next frame of tracked connection `i`: the handshake in order,
    /// then data from the client or (`from_backend`) the backend.
    fn conn_frame(&mut self, i: usize, from_backend: bool, name: &'static str) -> Seed {
        let conn = self.conns[i].clone();
        let public = self.fx.public_ifindex;
        let via = conn.via.filter(|_| conn.stage != Stage::Closed);
        let Some((snat, backend)) = via else {
            // Open it.
            let body = if conn.proto == UDP {
                let payload = self.random_payload(400);
                Datagram::udp(conn.client, conn.service, payload)
            } else {
                let mut syn = Datagram::tcp(conn.client, conn.service, SYN);
                syn.seq = conn.client_seq;
                syn.tcp_options = syn_options(&mut self.rng);
                syn
            };
            return Seed {
                name,
                body: self.client_frame(body),
                ingress: public,
                conn: Some((i, Step::Open)),
            };
        };
        let (backend_ingress, backend_dst_mac, backend_src_mac) = self.backend_side(*backend.ip());
        let from_backend_side = |d: Datagram| {
            Body::Packet(Datagram {
                dst_mac: backend_dst_mac,
                src_mac: backend_src_mac,
                ..d
            })
        };
        let (body, ingress, step) = match (conn.proto, conn.stage) {
            (UDP, _) => {
                let payload = self.random_payload(500);
                if from_backend {
                    let reply = Datagram::udp(backend, snat, payload);
                    (from_backend_side(reply), backend_ingress, Step::BackendData(0))
                } else {
                    let query = Datagram::udp(conn.client, conn.service, payload);
                    (self.client_frame(query), public, Step::ClientData(0))
                }
            }
            (_, Stage::SynSent) => {
                let mut syn_ack = Datagram::tcp(backend, snat, SYN | ACK);
                syn_ack.seq = conn.backend_seq;
                syn_ack.ack = conn.client_seq;
                syn_ack.window = 65_160;
                syn_ack.tcp_options = syn_options(&mut self.rng);
                (from_backend_side(syn_ack), backend_ingress, Step::SynAck)
            }
            (_, Stage::SynAcked) => {
                let mut ack = Datagram::tcp(conn.client, conn.service, ACK);
                ack.seq = conn.client_seq;
                ack.ack = conn.backend_seq;
                ack.window = 502;
                (self.client_frame(ack), public, Step::HandshakeAck)
            }
            _ => {
                // Now and then larger than the fixture's links (MTU 1500):
                // too big for the path (answered, or left to the kernel to
                // fragment).
                let max = if self.rng.percent(10) { 2000 } else { 1200 };
                let payload = self.random_payload(max);
                let len = payload.len() as u32;
                if from_backend {
                    let mut data = Datagram::tcp(backend, snat, ACK | PSH);
                    (data.seq, data.ack, data.window, data.payload) =
                        (conn.backend_seq, conn.client_seq, 509, payload);
                    (from_backend_side(data), backend_ingress, Step::BackendData(len))
                } else {
                    let mut data = Datagram::tcp(conn.client, conn.service, ACK | PSH);
                    (data.seq, data.ack, data.window, data.payload) =
                        (conn.client_seq, conn.backend_seq, 502, payload);
                    (self.client_frame(data), public, Step::ClientData(len))
                }
            }
        };
        Seed {
            name,
            body,
            ingress,
            conn: Some((i, step)),
        }
    }

    /// IPv4 for no service: the LB's own address, other ports and
    /// protocols of the VIP, other hosts, multicast.
    fn not_service(&mut self) -> Body {
        let client = self.new_client();
        let to = |addr, port| SocketAddrV4::new(addr, port);
        let datagram = match self.rng.below(9) {
            0 => {
                let mut ssh = Datagram::tcp(client, to(LB_PUBLIC, 22), ACK | PSH);
                ssh.payload = b"SSH-2.0-OpenSSH_9.2\r\n".to_vec();
                ssh
            }
            1 => Datagram::udp(client, to(LB_PUBLIC, 53), self.random_payload(100)),
            2 => Datagram::tcp(client, to(VIP, 8080), SYN),
            3 => Datagram::udp(client, to(VIP, FRONTEND_PORT), self.random_payload(100)),
            4 => Datagram::tcp(client, to(VIP, UDP_PORT), SYN),
            5 => {
                let mut echo = vec![8, 0, 0, 0];
                echo.extend_from_slice(&self.rng.bytes(4));
                echo.extend(self.random_payload(56));
                Datagram::other(ICMP, *client.ip(), VIP, echo)
            }
            6 => Datagram::other(47, *client.ip(), VIP, self.rng.bytes(24)),
            7 => Datagram::tcp(client, to(Ipv4Addr::new(198, 51, 100, 77), 80), SYN),
            _ => {
                let mut vrrp =
                    Datagram::other(112, LB_PUBLIC, Ipv4Addr::new(224, 0, 0, 18), self.rng.bytes(20));
                vrrp.ttl = 255;
                vrrp.dst_mac = MULTICAST_MAC;
                return Body::Packet(vrrp);
            }
        };
        self.client_frame(datagram)
    }

    fn not_ipv4(&mut self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(80);
        match self.rng.below(4) {
            0 => {
                // ARP who-has the VIP.
                frame.extend_from_slice(&[0xff; 6]);
                frame.extend_from_slice(&CLIENT_MAC);
                frame.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
                frame.extend_from_slice(&CLIENT_MAC);
                frame.extend_from_slice(&CLIENT_ADDRS[0].octets());
                frame.extend_from_slice(&[0; 6]);
                frame.extend_from_slice(&VIP.octets());
            }
            1 => {
                // IPv6 TCP SYN.
                frame.extend_from_slice(&self.fx.public_mac);
                frame.extend_from_slice(&CLIENT_MAC);
                frame.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 20, TCP, 64]);
                frame.extend_from_slice(&self.rng.bytes(32));
                frame.extend_from_slice(&self.rng.bytes(20));
            }
            2 => {
                // An 802.1Q-tagged IPv4 SYN to the VIP: not untagged IPv4.
                let syn = Datagram {
                    dst_mac: self.fx.public_mac,
                    ..Datagram::tcp(self.new_client(), SocketAddrV4::new(VIP, FRONTEND_PORT), SYN)
                }
                .build();
                frame.extend_from_slice(&syn[..12]);
                frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
                frame.extend_from_slice(&syn[12..]);
            }
            _ => {
                frame.extend_from_slice(&[0x01, 0x80, 0xc2, 0, 0, 0x0e]);
                frame.extend_from_slice(&CLIENT_MAC);
                frame.extend_from_slice(&[0x88, 0xcc]);
                let len = self.rng.inclusive(0, 60);
                frame.extend(self.rng.bytes(len));
            }
        }
        frame
    }

    /// Mutates `seed`: not at all, lightly (checksums stay right), or heavily.
    fn mutate(&mut self, seed: Seed) -> Case {
        let mut mutations = Vec::new();
        // The handshake of tracked connections mostly goes intact, so that
        // they open and later frames meet tracked entries.
        let handshake = matches!(
            seed.conn,
            Some((_, Step::Open | Step::SynAck | Step::HandshakeAck))
        );
        let roll = self.rng.below(100);
        let (light, heavy) = if handshake {
            (roll >= 90, false)
        } else {
            (roll >= 25, roll >= 60)
        };
        let mut ingress = seed.ingress;
        let mut frame = match seed.body {
            Body::Packet(mut datagram) => {
                if light && (!heavy || self.rng.percent(50)) {
                    for _ in 0..self.rng.inclusive(1, 3) {
                        mutations.push(self.mutate_datagram(&mut datagram));
                    }
                }
                datagram.build()
            }
            Body::Raw(frame) => frame,
        };
        if light && !heavy && self.rng.percent(30) {
            mutations.push(self.mutate_delivery(&mut frame, &mut ingress));
        }
        if heavy {
            for _ in 0..self.rng.inclusive(1, 4) {
                mutations.push(self.mutate_bytes(&mut frame));
            }
            frame.truncate(MAX_FRAME);
            if self.rng.percent(50) {
                fix_checksums(&mut frame);
                mutations.push("fix_checksums");
            }
        }
        *self.inputs.entry(format!("seed {}", seed.name)).or_default() += 1;
        let level = if heavy {
            "heavy"
        } else if mutations.is_empty() {
            "none"
        } else {
            "light"
        };
        *self.inputs.entry(format!("mutation {level}")).or_default() += 1;
        Case {
            seed: seed.name,
            frame,
            ingress,
            mutations,
            conn: seed.conn,
        }
    }

    /// A change that keeps the packet well-formed, checksums included.
    fn mutate_datagram(&mut self, d: &mut Datagram) -> &'static str {
        let rng = &mut self.rng;
        match rng.below(12) {
            0 => {
                d.tcp_flags = if rng.percent(50) {
                    rng.byte()
                } else {
                    rng.pick(&[
                        0,
                        SYN,
                        SYN | ACK,
                        FIN | ACK,
                        RST,
                        RST | ACK,
                        SYN | FIN,
                        SYN | RST,
                        0xff,
                        ACK | 0x20,
                    ])
                };
                "tcp_flags"
            }
            1 => {
                d.tcp_options = random_options(rng);
                "tcp_options"
            }
            2 => {
                d.tcp_options = malformed_options(rng);
                "tcp_options_malformed"
            }
            3 => {
                let len = rng.inclusive(0, 1400);
                d.payload = rng.bytes(len);
                "payload"
            }
            4 => {
                d.ttl = rng.pick(&[0, 1, 2, 3, 128, 255]);
                "ttl"
            }
            5 => {
                (d.tos, d.id) = (rng.byte(), rng.u16());
                "tos_and_id"
            }
            6 => {
                d.fragment ^= DONT_FRAGMENT;
                "dont_fragment"
            }
            7 => {
                d.udp_checksum = false;
                "no_udp_checksum"
            }
            8 => {
                (d.seq, d.ack) = (rng.u32(), rng.u32());
                "seq_and_ack"
            }
            9 => {
                let random = rng.u16();
                (d.window, d.urgent) = (rng.pick(&[0, 1, random, 0xffff]), rng.u16());
                "window_and_urgent"
            }
            10 => {
                let random = rng.u16();
                let port = rng.pick(&[
                    FRONTEND_PORT,
                    API_PORT,
                    UDP_PORT,
                    UNRESOLVED_PORT,
                    HAIRPIN_PORT,
                    DRAINED_PORT,
                    DRAINED_DROP_PORT,
                    DRAINED_UDP_PORT,
                    random,
                ]);
                if rng.percent(50) {
                    d.dst.set_port(port);
                } else {
                    // Within the new clients' ports: each new tuple takes a
                    // SNAT tuple for good, and a long run must not use them up.
                    let client_port =
                        rng.inclusive(usize::from(NEW_CLIENT_PORTS.0), usize::from(NEW_CLIENT_PORTS.1));
                    d.src.set_port(client_port as u16);
                }
                "ports"
            }
            _ => {
                let addr = rng.pick(&[VIP, ANCHOR, LB_PRIVATE, LB_PUBLIC, CLIENT_ADDRS[1], WEB_ADDRS[1]]);
                if rng.percent(50) {
                    d.dst.set_ip(addr);
                } else {
                    d.src.set_ip(addr);
                }
                "addresses"
            }
        }
    }

    /// Where and to whom a frame is delivered: another host's MAC, a group
    /// address, the other interface, an interface the program was not told of.
    fn mutate_delivery(&mut self, frame: &mut Vec<u8>, ingress: &mut u32) -> &'static str {
        let (public, private) = (self.fx.public_ifindex, self.fx.private_ifindex);
        let other = if *ingress == public { private } else { public };
        let other_mac = self.net.interface_mac(other).unwrap_or(OTHER_HOST_MAC);
        match self.rng.below(8) {
            0 => {
                frame[..6].copy_from_slice(&OTHER_HOST_MAC);
                "mac_other_host"
            }
            7 => {
                frame[6..12].copy_from_slice(&PEER_MAC);
                "from_the_peer"
            }
            1 => {
                frame[..6].copy_from_slice(&[0xff; 6]);
                "mac_broadcast"
            }
            2 => {
                frame[..6].copy_from_slice(&MULTICAST_MAC);
                "mac_multicast"
            }
            3 => {
                frame[..6].copy_from_slice(&other_mac);
                "mac_of_the_other_interface"
            }
            4 => {
                frame[..6].copy_from_slice(&other_mac);
                *ingress = other;
                "arrives_on_the_other_interface"
            }
            5 => {
                *ingress = LOOPBACK_IFINDEX;
                "arrives_on_loopback"
            }
            _ => {
                let len = self.rng.inclusive(1, 46);
                frame.extend(if self.rng.percent(50) {
                    vec![0; len]
                } else {
                    self.rng.bytes(len)
                });
                frame.truncate(MAX_FRAME);
                "ethernet_padding"
            }
        }
    }

    /// A change to the bytes, wherever it lands.
    fn mutate_bytes(&mut self, frame: &mut Vec<u8>) -> &'static str {
        let rng = &mut self.rng;
        let len = frame.len();
        let set = |frame: &mut Vec<u8>, at: usize, bytes: &[u8]| {
            if at + bytes.len() <= frame.len() {
                frame[at..at + bytes.len()].copy_from_slice(bytes);
            }
        };
        match rng.below(17) {
            0 => {
                for _ in 0..rng.inclusive(1, 8) {
                    let bit = rng.index(len * 8);
                    frame[bit / 8] ^= 1 << (bit % 8);
                }
                "bit_flips"
            }
            1 => {
                for _ in 0..rng.inclusive(1, 3) {
                    let bit = rng.index(len.min(74) * 8);
                    frame[bit / 8] ^= 1 << (bit % 8);
                }
                "header_bit_flips"
            }
            2 => {
                let at = rng.index(len);
                frame[at] = rng.byte();
                "random_byte"
            }
            3 => {
                frame.truncate(rng.inclusive(MIN_FRAME, len));
                "truncate"
            }
            4 => {
                let extra = rng.inclusive(1, 256);
                frame.extend(rng.bytes(extra));
                "extend_with_garbage"
            }
            5 => {
                let total = if rng.percent(50) {
                    rng.u16()
                } else {
                    (len.saturating_sub(14) + rng.index(17)).saturating_sub(8) as u16
                };
                set(frame, 16, &total.to_be_bytes());
                "ip_total_length"
            }
            6 => {
                let value = if rng.percent(50) {
                    0x40 | (rng.byte() & 0x0f)
                } else {
                    rng.byte()
                };
                set(frame, 14, &[value]);
                "ip_version_and_header_length"
            }
            7 => {
                let random = rng.u16();
                let fragment = rng.pick(&[0x2000, 0x0001, 0x3fff, 0x8000, 0x6000, random]);
                set(frame, 20, &u16::to_be_bytes(fragment));
                "ip_fragment_fields"
            }
            8 => {
                set(frame, 47, &[rng.byte()]);
                if rng.percent(30) && len > 46 {
                    frame[46] = (frame[46] & 0xf0) | (rng.byte() & 0x0f);
                }
                "tcp_flags_raw"
            }
            9 => {
                if len > 46 {
                    frame[46] = (rng.byte() & 0xf0) | (frame[46] & 0x0f);
                }
                "tcp_data_offset"
            }
            10 => {
                let random = rng.u16();
                let udp_len = rng.pick(&[0, 7, 8, 9, random, (len.saturating_sub(34)) as u16 + 1]);
                set(frame, 38, &udp_len.to_be_bytes());
                "udp_length"
            }
            11 => {
                let at = rng.pick(&[24_usize, 40, 50]);
                let delta = rng.u16().max(1);
                if at + 2 <= len {
                    let value = be16(frame, at) ^ delta;
                    frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
                }
                "wrong_checksum"
            }
            12 => {
                set(frame, 40, &[0, 0]);
                "zero_udp_checksum"
            }
            13 => {
                let random = rng.byte();
                set(frame, 22, &[rng.pick(&[0, 1, 2, 255, random])]);
                "ttl_raw"
            }
            14 => {
                let random = rng.byte();
                set(frame, 23, &[rng.pick(&[TCP, UDP, ICMP, 0, 255, random])]);
                "ip_protocol"
            }
            15 => {
                let random = rng.u16();
                let ether_type: u16 = rng.pick(&[0x0800, 0x86dd, 0x0806, 0x8100, random]);
                set(frame, 12, &ether_type.to_be_bytes());
                "ether_type"
            }
            _ => {
                let new_len = rng.inclusive(MIN_FRAME, MAX_FRAME);
                let keep = new_len.min(len);
                frame.truncate(keep);
                frame.extend(rng.bytes(new_len - keep));
                "random_length"
            }
        }
    }
}

/// A rejection's reason without its details (parenthesised), numbers,
/// addresses and MACs, to count alike ones together.
fn reason_of(why: &str) -> String {
    let mut text = String::with_capacity(why.len());
    let mut depth = 0_u32;
    for c in why.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => text.push(c),
            _ => {}
        }
    }
    let is_value = |word: &str| {
        let word = word.trim_end_matches([',', '.', ':', ';']);
        word.starts_with(|c: char| c.is_ascii_digit())
            || (word.contains(':') && word.chars().all(|c| c.is_ascii_hexdigit() || c == ':'))
    };
    let words: Vec<&str> = text
        .split_whitespace()
        .map(|word| if is_value(word) { "#" } else { word })
        .collect();
    words.join(" ")
}

/// BPF_PROG_TEST_RUN of the XDP program on `frame` arriving on `ingress`.
fn test_run(program: &Xdp, frame: &[u8], ingress: u32) -> anyhow::Result<(u32, Vec<u8>)> {
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }:
    // data_end must be the frame's length.
    let mut ctx = [0_u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ingress.to_ne_bytes());
    let mut out = vec![0_u8; frame.len() + 256];
    let mut options = TestRunOptions::new();
    options.data_in = Some(frame);
    options.data_out = Some(&mut out);
    options.ctx_in = Some(&ctx);
    let result = program.test_run(options).with_context(|| {
        format!(
            "BPF_PROG_TEST_RUN of a {}-byte frame: {}",
            frame.len(),
            hex(frame)
        )
    })?;
    out.truncate(result.data_size_out as usize);
    Ok((result.return_value, out))
}

/// Runs `frames` frames, generated from `seed`, through the real program in
/// a fixture of its own (a namespace, the program loaded and configured with
/// [`fuzz_services`]), checking each.
pub fn run(frames: u64, seed: u64) -> anyhow::Result<FuzzReport> {
    let services = fuzz_services();
    let toml = services_toml(&services);
    with_fixture_settings("", &toml, move |fx| Fuzzer::new(fx, services, seed).run(frames))
        .context("the fuzz fixture (namespace and loaded program)")?
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC: (u32, [u8; 6]) = (2, [0x02, 0, 0, 0, 0, 0x02]);
    const PRIVATE: (u32, [u8; 6]) = (3, [0x02, 0, 0, 0, 0, 0x03]);

    fn net() -> Network {
        Network::of_fixture(fuzz_services(), PUBLIC, PRIVATE)
    }

    fn client() -> SocketAddrV4 {
        SocketAddrV4::new(CLIENT_ADDRS[0], 40_000)
    }

    fn frontend() -> SocketAddrV4 {
        SocketAddrV4::new(VIP, FRONTEND_PORT)
    }

    fn backend() -> SocketAddrV4 {
        SocketAddrV4::new(WEB_ADDRS[1], FRONTEND_PORT)
    }

    fn snat() -> SocketAddrV4 {
        SocketAddrV4::new(LB_PRIVATE, 23_456)
    }

    fn syn_to(service: SocketAddrV4) -> Vec<u8> {
        let mut syn = Datagram::tcp(client(), service, SYN);
        syn.dst_mac = PUBLIC.1;
        syn.seq = 1000;
        syn.payload = b"hi".to_vec();
        syn.build()
    }

    /// A reference translation, written here from scratch: new MACs,
    /// addresses and ports, TTL - 1, both checksums recomputed.
    fn translated(input: &[u8], macs: ([u8; 6], [u8; 6]), src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
        let mut out = input.to_vec();
        out[..6].copy_from_slice(&macs.0);
        out[6..12].copy_from_slice(&macs.1);
        out[22] -= 1;
        out[26..30].copy_from_slice(&src.ip().octets());
        out[30..34].copy_from_slice(&dst.ip().octets());
        out[34..36].copy_from_slice(&src.port().to_be_bytes());
        out[36..38].copy_from_slice(&dst.port().to_be_bytes());
        fix_checksums(&mut out);
        out
    }

    fn forward_of(input: &[u8]) -> Vec<u8> {
        translated(input, (WEB_MACS[1], PRIVATE.1), snat(), backend())
    }

    fn assert_flagged(result: Result<Checked, String>, why: &str) {
        match result {
            Err(message) => assert!(message.contains(why), "flagged, but for {message:?}, not {why:?}"),
            Ok(checked) => panic!("not flagged ({why}): {checked:?}"),
        }
    }

    #[test]
    fn a_correct_forward_and_reply_pass_and_are_remembered() {
        let net = net();
        let mut seen = Translations::default();
        let syn = syn_to(frontend());
        let checked = check(&net, &seen, PUBLIC.0, &syn, XDP_REDIRECT, &forward_of(&syn)).unwrap();
        assert_eq!(checked.kind, Kind::Forward);
        assert!(checked.opens);
        seen.record(&checked);

        let mut reply = Datagram::tcp(backend(), snat(), SYN | ACK);
        reply.dst_mac = PRIVATE.1;
        reply.payload = b"odd".to_vec();
        let reply = reply.build();
        let back = translated(&reply, (CLIENT_MAC, PUBLIC.1), frontend(), client());
        let checked = check(&net, &seen, PRIVATE.0, &reply, XDP_REDIRECT, &back).unwrap();
        assert_eq!(checked.kind, Kind::Reply);

        // Later segments of the connection follow it.
        let mut data = Datagram::tcp(client(), frontend(), ACK);
        data.dst_mac = PUBLIC.1;
        let data = data.build();
        assert!(check(&net, &seen, PUBLIC.0, &data, XDP_REDIRECT, &forward_of(&data)).is_ok());
        let elsewhere = translated(
            &data,
            (WEB_MACS[0], PRIVATE.1),
            snat(),
            SocketAddrV4::new(WEB_ADDRS[0], FRONTEND_PORT),
        );
        assert_flagged(
            check(&net, &seen, PUBLIC.0, &data, XDP_REDIRECT, &elsewhere),
            "later packets must follow their connection",
        );

        // Nobody else's connection went out as that SNAT tuple.
        let stranger = translated(
            &reply,
            (CLIENT_MAC, PUBLIC.1),
            frontend(),
            SocketAddrV4::new(CLIENT_ADDRS[1], 1),
        );
        assert_flagged(
            check(&net, &seen, PRIVATE.0, &reply, XDP_REDIRECT, &stranger),
            "no forward translation",
        );
    }

    /// A reference "fragmentation needed" answer to `input` on the public
    /// interface, written here from scratch.
    fn frag_needed_of(input: &[u8], mtu: u16) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&input[6..12]);
        out.extend_from_slice(&PUBLIC.1);
        out.extend_from_slice(&[0x08, 0x00, 0x45, 0xc0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0]);
        out.extend_from_slice(&input[30..34]);
        out.extend_from_slice(&input[26..30]);
        let ip_check = checksum_of(ones_sum(&out[14..34]));
        out[24..26].copy_from_slice(&ip_check.to_be_bytes());
        out.extend_from_slice(&[3, 4, 0, 0, 0, 0]);
        out.extend_from_slice(&mtu.to_be_bytes());
        out.extend_from_slice(&input[14..42]);
        let icmp_check = checksum_of(ones_sum(&out[34..]));
        out[36..38].copy_from_slice(&icmp_check.to_be_bytes());
        out
    }

    #[test]
    fn a_frag_needed_answer_must_quote_a_too_big_df_packet_of_a_connection() {
        let net = net();
        let mut seen = Translations::default();
        let syn = syn_to(frontend());
        seen.record(&check(&net, &seen, PUBLIC.0, &syn, XDP_REDIRECT, &forward_of(&syn)).unwrap());
        let mut data = Datagram::tcp(client(), frontend(), ACK);
        data.dst_mac = PUBLIC.1;
        data.payload = vec![7; 1600];
        let big = data.build();
        let answer = frag_needed_of(&big, 1500);
        let checked = check(&net, &seen, PUBLIC.0, &big, XDP_REDIRECT, &answer).unwrap();
        assert_eq!(checked.kind, Kind::FragNeeded);

        assert_flagged(
            check(
                &net,
                &seen,
                PUBLIC.0,
                &big,
                XDP_REDIRECT,
                &frag_needed_of(&big, 1700),
            ),
            "below the packet's length",
        );
        let mut bad_quote = answer.clone();
        bad_quote[60] ^= 1;
        assert_flagged(
            check(&net, &seen, PUBLIC.0, &big, XDP_REDIRECT, &bad_quote),
            "ICMP checksum",
        );
        let mut no_df = big.clone();
        no_df[20] = 0;
        fix_checksums(&mut no_df);
        assert_flagged(
            check(
                &net,
                &seen,
                PUBLIC.0,
                &no_df,
                XDP_REDIRECT,
                &frag_needed_of(&no_df, 1500),
            ),
            "without DF",
        );
        // A segment of a connection the checker never saw opened.
        let mut stray = Datagram::tcp(SocketAddrV4::new(CLIENT_ADDRS[1], 1), frontend(), ACK);
        stray.dst_mac = PUBLIC.1;
        stray.payload = vec![7; 1600];
        let stray = stray.build();
        assert_flagged(
            check(
                &net,
                &seen,
                PUBLIC.0,
                &stray,
                XDP_REDIRECT,
                &frag_needed_of(&stray, 1500),
            ),
            "belongs to no connection",
        );
    }

    #[test]
    fn a_connection_opened_by_a_packet_answered_as_too_big_gets_its_replies() {
        let net = net();
        let mut seen = Translations::default();
        let mut syn = Datagram::tcp(client(), frontend(), SYN);
        syn.dst_mac = PUBLIC.1;
        syn.payload = vec![7; 1600];
        let big = syn.build();
        let answered = check(
            &net,
            &seen,
            PUBLIC.0,
            &big,
            XDP_REDIRECT,
            &frag_needed_of(&big, 1500),
        )
        .unwrap();
        assert_eq!(answered.kind, Kind::FragNeeded);
        seen.record(&answered);
        // The program recorded the connection with a tuple no translation
        // showed: its backend's replies reach its client...
        let mut reply = Datagram::tcp(backend(), snat(), SYN | ACK);
        reply.dst_mac = PRIVATE.1;
        let reply = reply.build();
        let back = translated(&reply, (CLIENT_MAC, PUBLIC.1), frontend(), client());
        assert_eq!(
            check(&net, &seen, PRIVATE.0, &reply, XDP_REDIRECT, &back)
                .unwrap()
                .kind,
            Kind::Reply
        );
        // ...and no other client.
        let elsewhere = SocketAddrV4::new(CLIENT_ADDRS[1], 1);
        let misdirected = translated(&reply, (CLIENT_MAC, PUBLIC.1), frontend(), elsewhere);
        assert_flagged(
            check(&net, &seen, PRIVATE.0, &reply, XDP_REDIRECT, &misdirected),
            "no forward translation",
        );
    }

    #[test]
    fn bad_outputs_are_flagged() {
        let net = net();
        let seen = Translations::default();
        let syn = syn_to(frontend());
        let good = forward_of(&syn);
        let run = |action, output: &[u8]| check(&net, &seen, PUBLIC.0, &syn, action, output);
        assert!(run(XDP_REDIRECT, &good).is_ok());

        let mut bad_tcp_checksum = good.clone();
        bad_tcp_checksum[51] ^= 0x10;
        assert_flagged(run(XDP_REDIRECT, &bad_tcp_checksum), "TCP checksum wrong");
        let mut bad_ip_checksum = good.clone();
        bad_ip_checksum[25] ^= 1;
        assert_flagged(run(XDP_REDIRECT, &bad_ip_checksum), "IPv4 header checksum wrong");
        let mut changed_payload = good.clone();
        *changed_payload.last_mut().unwrap() ^= 1;
        fix_checksums(&mut changed_payload);
        assert_flagged(run(XDP_REDIRECT, &changed_payload), "the TCP options or payload");
        let mut ttl_kept = good.clone();
        ttl_kept[22] += 1;
        fix_checksums(&mut ttl_kept);
        assert_flagged(run(XDP_REDIRECT, &ttl_kept), "TTL 64 after translation");
        let not_a_backend = translated(
            &syn,
            (WEB_MACS[1], PRIVATE.1),
            snat(),
            SocketAddrV4::new(WEB_ADDRS[1], 3001),
        );
        assert_flagged(run(XDP_REDIRECT, &not_a_backend), "not an active backend");
        let wrong_mac = translated(&syn, (WEB_MACS[0], PRIVATE.1), snat(), backend());
        assert_flagged(run(XDP_REDIRECT, &wrong_mac), "but 203.0.113.12 is");

        let mut changed = syn.clone();
        changed[40] ^= 1;
        assert_flagged(run(XDP_PASS, &changed), "the TCP sequence number");
        assert_flagged(run(XDP_ABORTED, &syn), "XDP_ABORTED");
        assert_flagged(run(7, &syn), "unknown XDP action");

        // A data segment of a connection no SYN opened.
        let mut data = Datagram::tcp(client(), frontend(), ACK);
        data.dst_mac = PUBLIC.1;
        let data = data.build();
        assert_flagged(
            check(&net, &seen, PUBLIC.0, &data, XDP_REDIRECT, &forward_of(&data)),
            "no SYN opened",
        );
        // A fragment, and a frame for another host, are never translated.
        let mut fragment = syn.clone();
        fragment[20] |= 0x20;
        fix_checksums(&mut fragment);
        assert_flagged(
            check(
                &net,
                &seen,
                PUBLIC.0,
                &fragment,
                XDP_REDIRECT,
                &forward_of(&fragment),
            ),
            "a fragment",
        );
        let mut elsewhere = syn.clone();
        elsewhere[..6].copy_from_slice(&OTHER_HOST_MAC);
        assert_flagged(
            check(
                &net,
                &seen,
                PUBLIC.0,
                &elsewhere,
                XDP_REDIRECT,
                &forward_of(&elsewhere),
            ),
            "another host's MAC",
        );
    }

    #[test]
    fn a_translation_keeps_a_wrong_checksum_exactly_as_wrong() {
        let net = net();
        let seen = Translations::default();
        let syn = syn_to(frontend());
        let last = syn.len() - 1;
        // Corrupted on the way: the checksum no longer matches the payload.
        let mut corrupted = syn.clone();
        corrupted[last] ^= 0x40;
        // An incremental update (RFC 1624) keeps the error: accepted.
        let mut kept = forward_of(&syn);
        kept[last] ^= 0x40;
        assert!(check(&net, &seen, PUBLIC.0, &corrupted, XDP_REDIRECT, &kept).is_ok());
        // A recomputed checksum hides the corruption from the backend.
        assert_flagged(
            check(
                &net,
                &seen,
                PUBLIC.0,
                &corrupted,
                XDP_REDIRECT,
                &forward_of(&corrupted),
            ),
            "TCP checksum right after translation, wrong",
        );
    }

    #[test]
    fn udp_checksum_zero_stays_zero_and_a_real_one_never_becomes_zero() {
        let net = net();
        let seen = Translations::default();
        let service = SocketAddrV4::new(VIP, UDP_PORT);
        let backend = SocketAddrV4::new(WEB_ADDRS[0], UDP_PORT);
        let mut query = Datagram::udp(client(), service, b"query".to_vec());
        query.dst_mac = PUBLIC.1;
        let with_checksum = query.build();
        query.udp_checksum = false;
        let without = query.build();
        let forward = |input: &[u8]| translated(input, (WEB_MACS[0], PRIVATE.1), snat(), backend);
        let run = |input: &[u8], output: &[u8]| check(&net, &seen, PUBLIC.0, input, XDP_REDIRECT, output);
        assert!(run(&with_checksum, &forward(&with_checksum)).is_ok());
        assert!(run(&without, &forward(&without)).is_ok());
        let mut zeroed = forward(&with_checksum);
        zeroed[40..42].fill(0);
        assert_flagged(run(&with_checksum, &zeroed), "became 0");
    }

    #[test]
    fn a_refusal_follows_rfc_9293() {
        let net = net();
        let seen = Translations::default();
        let drained = SocketAddrV4::new(VIP, DRAINED_PORT);
        let syn = syn_to(drained);
        // From scratch: RST+ACK, seq 0, ack = seq + 2 bytes of data + SYN.
        let mut rst = Datagram::tcp(drained, client(), RST | ACK);
        (rst.dst_mac, rst.src_mac, rst.id, rst.window) = (CLIENT_MAC, PUBLIC.1, 0, 0);
        rst.ack = 1000 + 2 + 1;
        let rst = rst.build();
        let run = |input: &[u8], output: &[u8]| check(&net, &seen, PUBLIC.0, input, XDP_REDIRECT, output);
        assert_eq!(run(&syn, &rst).unwrap().kind, Kind::Refusal);

        let mut off_by_one = rst.clone();
        off_by_one[45] += 1;
        fix_checksums(&mut off_by_one);
        assert_flagged(run(&syn, &off_by_one), "acknowledgment");
        let mut group_source = rst.clone();
        group_source[6..12].fill(0xff);
        assert_flagged(run(&syn, &group_source), "source MAC");
        let mut syn_rst = syn.clone();
        syn_rst[47] |= RST;
        fix_checksums(&mut syn_rst);
        assert_flagged(run(&syn_rst, &rst), "opens no connection");
        let mut corrupted = syn.clone();
        corrupted[55] ^= 1;
        assert_flagged(run(&corrupted, &rst), "TCP checksum is wrong");
        let mut syn_fin = syn.clone();
        syn_fin[47] |= FIN;
        fix_checksums(&mut syn_fin);
        assert_flagged(run(&syn_fin, &rst), "opens no connection");
        // A service with backends is never refused.
        assert_flagged(run(&syn_to(frontend()), &rst), "changed the frame's length");
    }

    #[test]
    fn a_handoff_goes_only_to_a_configured_peer_and_only_from_here() {
        let mut net = net();
        let seen = Translations::default();
        let handed = |input: &[u8], own_mac: [u8; 6]| {
            let mut output = input.to_vec();
            output[..6].copy_from_slice(&PEER_MAC);
            output[6..12].copy_from_slice(&own_mac);
            output
        };
        let mut data = Datagram::tcp(client(), frontend(), ACK | PSH);
        data.dst_mac = PUBLIC.1;
        let data = data.build();
        let run = |net: &Network, input: &[u8], ingress| {
            check(net, &seen, ingress, input, XDP_REDIRECT, &handed(input, PUBLIC.1))
        };
        assert_flagged(run(&net, &data, PUBLIC.0), "no VRRP peer");
        net.peer = Some((PUBLIC.0, PEER_MAC));
        assert_eq!(run(&net, &data, PUBLIC.0).unwrap().kind, Kind::Handoff);

        let mut from_peer = data.clone();
        from_peer[6..12].copy_from_slice(&PEER_MAC);
        assert_flagged(run(&net, &from_peer, PUBLIC.0), "back to it");
        assert_flagged(run(&net, &syn_to(frontend()), PUBLIC.0), "handed off a SYN");
        let mut on_private = data.clone();
        on_private[..6].copy_from_slice(&PRIVATE.1);
        assert_flagged(run(&net, &on_private, PRIVATE.0), "on the peer's link");
        let mut broadcast = data.clone();
        broadcast[..6].fill(0xff);
        assert_flagged(run(&net, &broadcast, PUBLIC.0), "on the peer's link");
    }

    #[test]
    fn alike_rejections_share_a_reason() {
        assert_eq!(
            reason_of(
                "the reset's source MAC (must be the interface's) ff:ff:ff:ff:ff:ff, acknowledgment 12"
            ),
            "the reset's source MAC # acknowledgment #"
        );
        assert_eq!(
            reason_of("IPv4 header checksum wrong (off by 0x0040) after translation (RFC 1624)"),
            "IPv4 header checksum wrong after translation"
        );
    }

    #[test]
    fn counters_must_count_every_frame_once_in_its_outcome_group() {
        let named = |pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
            pairs.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect()
        };
        let before = named(&[("forward_new", 0), ("pass_not_ipv4", 0), ("drop_malformed", 0)]);
        let mut tally = [0; Kind::ALL.len()];
        tally[Kind::Forward.index()] = 2;
        tally[Kind::PassUntouched.index()] = 1;
        let after = named(&[("forward_new", 2), ("pass_not_ipv4", 1), ("drop_malformed", 0)]);
        assert!(counter_violations(&before, &after, 3, &tally).is_empty());
        let twice = named(&[("forward_new", 2), ("pass_not_ipv4", 2), ("drop_malformed", 0)]);
        assert_eq!(counter_violations(&before, &twice, 3, &tally).len(), 2);
        let misfiled = named(&[("forward_new", 1), ("pass_not_ipv4", 1), ("drop_malformed", 1)]);
        assert_eq!(counter_violations(&before, &misfiled, 3, &tally).len(), 2);
        let unknown = named(&[("forward_new", 2), ("pass_not_ipv4", 0), ("teleported", 1)]);
        assert_eq!(
            counter_violations(&before, &unknown, 3, &tally).len(),
            2,
            "unknown counter, passed frame not counted"
        );
    }

    #[test]
    fn generated_frames_verify_and_the_toml_names_every_service() {
        let mut rng = Rng(7);
        for _ in 0..100 {
            let mut d = Datagram::tcp(client(), frontend(), SYN);
            d.tcp_options = random_options(&mut rng);
            let len = rng.inclusive(0, 50);
            d.payload = rng.bytes(len);
            let frame = d.build();
            let packet = Translatable::parse(&frame).unwrap();
            assert_eq!(packet.l4_residue(&frame), 0);
            assert!(verifies(ones_sum(&frame[14..34])));
            let parsed = crate::packet::parse_and_verify(&frame).unwrap();
            assert_eq!(parsed.dst_port, FRONTEND_PORT);
        }
        let toml = services_toml(&fuzz_services());
        for service in fuzz_services() {
            assert!(toml.contains(&format!("name = \"{}\"", service.name)));
        }
    }
}
