//! A namespace where the real XDP object runs under BPF_PROG_TEST_RUN:
//! two interfaces (public, private) with routes and static neighbours, so
//! that the program's FIB lookups succeed without any traffic.

use std::{net::Ipv4Addr, path::Path, sync::Mutex};

use anyhow::Context;
use aya::{
    maps::{HashMap, Map, MapData},
    programs::{TestRun, TestRunOptions},
};
use lb_common::maps::{Flow, FlowKey};
use lb_user::{config::Config, dataplane::Dataplane};

use crate::{
    netns::Netns,
    testbed::{base_services, ANCHOR, LB_PRIVATE, LB_PUBLIC, VIP},
};

pub const PUBLIC_IF: &str = "pub0";
pub const PRIVATE_IF: &str = "priv0";
/// The public interface's MAC address: where [`Frame`](crate::packet::Frame)s
/// are addressed unless told otherwise.
pub const PUBLIC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The private interface's MAC address: frames from the backends' side
/// must be addressed to it.
pub const PRIVATE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
pub const WEB_MACS: [[u8; 6]; 2] = [[0x02, 0, 0, 0, 0, 0x11], [0x02, 0, 0, 0, 0, 0x12]];
/// A backend with a route but no neighbour entry.
pub const UNRESOLVED_BACKEND: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 13);
/// The service whose only backend is [`UNRESOLVED_BACKEND`].
pub const UNRESOLVED_PORT: u16 = 4000;
/// A backend on the public side: reaching it leaves by the ingress interface.
pub const PUBLIC_BACKEND: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
pub const PUBLIC_BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x20];
/// The service whose only backend is [`PUBLIC_BACKEND`].
pub const HAIRPIN_PORT: u16 = 4100;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// The result of one run of the program.
#[derive(Debug)]
pub struct Verdict {
    pub action: u32,
    pub frame: Vec<u8>,
}

/// The fixture: a namespace and the loaded, configured program.
pub struct Fixture {
    /// The namespace's name, for changing its routes or neighbours mid-test.
    pub netns: String,
    pub public_ifindex: u32,
    pub private_ifindex: u32,
    pub public_mac: [u8; 6],
    pub private_mac: [u8; 6],
    pub dataplane: Mutex<Dataplane>,
}

impl Fixture {
    /// Runs the program once on `frame` arriving on `ifindex`.
    pub fn run(&self, frame: &[u8], ifindex: u32) -> Verdict {
        self.run_repeated(frame, ifindex, 1).0
    }

    /// Runs `repeat` times in the kernel; also returns the kernel's mean time
    /// per run. Each repetition runs on the frame the previous one left: after
    /// a translation, that is a different packet (and usually a pass).
    pub fn run_repeated(&self, frame: &[u8], ifindex: u32, repeat: u32) -> (Verdict, std::time::Duration) {
        let mut dataplane = self.dataplane.lock().expect("dataplane lock");
        let program = dataplane.program().expect("program");
        run_program(program, frame, ifindex, repeat)
    }

    /// The program's connection table, opened by its id (the data plane
    /// keeps its own handle private): for tests that read an entry or set
    /// its age.
    pub fn flows(&self) -> HashMap<MapData, FlowKey, Flow> {
        let mut dataplane = self.dataplane.lock().expect("dataplane lock");
        let info = dataplane
            .program()
            .expect("program")
            .info()
            .expect("program info");
        let ids = info
            .map_ids()
            .expect("map ids")
            .expect("the kernel lists map ids");
        let flows = ids
            .into_iter()
            .map(|id| MapData::from_id(id).expect("map by id"))
            .find(|map| map.info().is_ok_and(|info| info.name() == b"FLOWS"))
            .expect("the program uses FLOWS");
        HashMap::try_from(Map::from_map_data(flows).expect("map type")).expect("FLOWS is a hash map")
    }
}

/// The connection-table key of packets from `src` to `dst` (as they arrive).
#[must_use]
pub fn flow_key(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), proto: u8) -> FlowKey {
    FlowKey {
        src_addr: u32::from_ne_bytes(src.0.octets()),
        dst_addr: u32::from_ne_bytes(dst.0.octets()),
        src_port: src.1.to_be(),
        dst_port: dst.1.to_be(),
        proto,
        _pad: [0; 3],
    }
}

/// `bpf_ktime_get_coarse_ns()` as the program would read it now: the
/// monotonic coarse clock, the time base of `Flow::last_seen_ns`.
#[must_use]
pub fn coarse_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &raw mut now) };
    assert_eq!(rc, 0, "clock_gettime: {}", std::io::Error::last_os_error());
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// BPF_PROG_TEST_RUN of an XDP program with an xdp_md naming the ingress interface.
pub fn run_program(
    program: &aya::programs::Xdp,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
) -> (Verdict, std::time::Duration) {
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
    // data_end must equal the frame's length (the kernel checks it).
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; frame.len() + 256];
    let mut options = TestRunOptions::new();
    options.data_in = Some(frame);
    options.data_out = Some(&mut out);
    options.ctx_in = Some(&ctx);
    options.repeat = repeat;
    let result = program.test_run(options).expect("BPF_PROG_TEST_RUN");
    out.truncate(result.data_size_out as usize);
    (
        Verdict {
            action: result.return_value,
            frame: out,
        },
        result.duration,
    )
}

/// The fixture's config: the testbed's services, one whose backend has no
/// neighbour entry, and one whose backend is on the public side.
pub fn services() -> String {
    let single = |name: &str, port: u16, backend: Ipv4Addr| {
        format!(
            "\n[[service]]\nname = \"{name}\"\naddresses = [\"{VIP}\"]\nport = {port}\n\
             backends = [{{ name = \"only\", address = \"{backend}:{port}\" }}]\n"
        )
    };
    format!(
        "{}{}{}",
        base_services(),
        single("unresolved", UNRESOLVED_PORT, UNRESOLVED_BACKEND),
        single("hairpin", HAIRPIN_PORT, PUBLIC_BACKEND)
    )
}

fn mac_of(ns: &Netns, dev: &str) -> anyhow::Result<[u8; 6]> {
    let text = ns.ip(&["-o", "link", "show", dev])?;
    let hex = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .context("no MAC")?;
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(hex.split(':')) {
        *byte = u8::from_str_radix(part, 16)?;
    }
    Ok(mac)
}

fn ifindex_of(ns: &Netns, dev: &str) -> anyhow::Result<u32> {
    let text = ns.ip(&["-o", "link", "show", dev])?;
    Ok(text.split(':').next().context("ifindex")?.trim().parse()?)
}

/// Builds the namespace, loads the program configured with `services`, and
/// runs `f` on a thread inside the namespace (where FIB lookups resolve).
pub fn with_fixture<T: Send + 'static>(
    services_toml: &str,
    f: impl FnOnce(&Fixture) -> T + Send + 'static,
) -> anyhow::Result<T> {
    with_fixture_settings("", services_toml, f)
}

/// As [`with_fixture`], with extra `[dataplane]` lines (e.g. timeouts).
pub fn with_fixture_settings<T: Send + 'static>(
    dataplane_toml: &str,
    services_toml: &str,
    f: impl FnOnce(&Fixture) -> T + Send + 'static,
) -> anyhow::Result<T> {
    let ns = Netns::new(&crate::unique_tag("xfx"))?;
    let mac_text = |m: [u8; 6]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    for (dev, mac, peer, addr) in [
        (PUBLIC_IF, PUBLIC_MAC, "pub0p", LB_PUBLIC),
        (PRIVATE_IF, PRIVATE_MAC, "priv0p", LB_PRIVATE),
    ] {
        ns.ip(&[
            "link",
            "add",
            dev,
            "address",
            &mac_text(mac),
            "type",
            "veth",
            "peer",
            "name",
            peer,
        ])?;
        ns.ip(&["link", "set", dev, "up"])?;
        ns.ip(&["link", "set", peer, "up"])?;
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev])?;
        ns.sysctl(&format!("net.ipv4.conf.{dev}.forwarding"), "1")?;
    }
    for vip in [VIP, ANCHOR] {
        ns.ip(&["addr", "add", &format!("{vip}/32"), "dev", PUBLIC_IF])?;
    }
    for client in crate::testbed::CLIENT_ADDRS {
        ns.ip(&[
            "neigh",
            "add",
            &client.to_string(),
            "lladdr",
            &mac_text(CLIENT_MAC),
            "dev",
            PUBLIC_IF,
            "nud",
            "permanent",
        ])?;
    }
    ns.ip(&[
        "neigh",
        "add",
        &PUBLIC_BACKEND.to_string(),
        "lladdr",
        &mac_text(PUBLIC_BACKEND_MAC),
        "dev",
        PUBLIC_IF,
        "nud",
        "permanent",
    ])?;
    for (web, mac) in crate::testbed::WEB_ADDRS.iter().zip(WEB_MACS) {
        ns.ip(&[
            "neigh",
            "add",
            &web.to_string(),
            "lladdr",
            &mac_text(mac),
            "dev",
            PRIVATE_IF,
            "nud",
            "permanent",
        ])?;
    }
    // The default SNAT range, unless the caller sets its own.
    let dataplane_toml = if dataplane_toml.contains("snat_ports") {
        dataplane_toml.to_owned()
    } else {
        format!("snat_ports = \"20000-29999\"\n{dataplane_toml}")
    };
    let config_text = format!(
        "[dataplane]\ninterfaces = [\"{PUBLIC_IF}\", \"{PRIVATE_IF}\"]\nsnat_address = \"{LB_PRIVATE}\"\n{dataplane_toml}\n\n{services_toml}"
    );
    let config = Config::parse(Path::new("fixture.toml"), &config_text)?;
    let fixture_parts = (
        ifindex_of(&ns, PUBLIC_IF)?,
        ifindex_of(&ns, PRIVATE_IF)?,
        mac_of(&ns, PUBLIC_IF)?,
        mac_of(&ns, PRIVATE_IF)?,
    );
    let netns_name = ns.name().to_owned();
    let result = ns.run(move || -> anyhow::Result<T> {
        // As the daemon does: load (which tells the program the interfaces'
        // MAC addresses), then configure.
        let mut dataplane = Dataplane::load(&config.dataplane)?;
        dataplane.configure(&config)?;
        let fixture = Fixture {
            netns: netns_name,
            public_ifindex: fixture_parts.0,
            private_ifindex: fixture_parts.1,
            public_mac: fixture_parts.2,
            private_mac: fixture_parts.3,
            dataplane: Mutex::new(dataplane),
        };
        Ok(f(&fixture))
    })?;
    drop(ns);
    result
}
