//! The local testbed, wired like the reference droplets:
//!
//! ```text
//!  client ns                lb ns                    switch ns          web ns (x2)
//!  eth0 198.51.100.10/.11 - eth0 198.51.100.2        br0 -------------- eth0 203.0.113.11/.12
//!                           + VIP 198.51.100.100      |                  nginx :3000 :5000
//!                           + anchor 198.51.100.50    |                  udp :5353
//!                           eth1 203.0.113.2 ---------+
//! ```
//! eth0 is the public side, eth1 the private (VPC) side.

use std::{collections::HashMap, net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::Context;

use crate::{
    daemon::Daemon,
    netns::{veth, Netns},
    webserver::{Nginx, UdpResponder},
};

pub const CLIENT_ADDRS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 51, 100, 10), Ipv4Addr::new(198, 51, 100, 11)];
pub const LB_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The floating (reserved) IP.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
/// The address the reserved IP arrives on at a DigitalOcean droplet.
pub const ANCHOR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);
pub const LB_PRIVATE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// The second load balancer of a pair.
pub const LB2_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
pub const LB2_PRIVATE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);
/// Node i's public and private addresses (node 0 is `lb`, node 1 `lb2`).
pub const NODE_PUBLIC: [Ipv4Addr; 2] = [LB_PUBLIC, LB2_PUBLIC];
pub const NODE_PRIVATE: [Ipv4Addr; 2] = [LB_PRIVATE, LB2_PRIVATE];
/// The VRRP router id the pair uses (the reference's).
pub const VRID: u8 = 50;
pub const WEB_ADDRS: [Ipv4Addr; 2] = [Ipv4Addr::new(203, 0, 113, 11), Ipv4Addr::new(203, 0, 113, 12)];
pub const WEB_NAMES: [&str; 2] = ["web1", "web2"];
pub const FRONTEND_PORT: u16 = 3000;
pub const API_PORT: u16 = 5000;
pub const UDP_PORT: u16 = 5353;

/// The services of the reference HAProxy, plus a UDP one.
pub fn base_services() -> String {
    let backends = |port: u16| {
        WEB_NAMES
            .iter()
            .zip(WEB_ADDRS)
            .map(|(name, addr)| format!("  {{ name = \"{name}\", address = \"{addr}:{port}\" }},\n"))
            .collect::<String>()
    };
    format!(
        "[[service]]\nname = \"frontend\"\naddresses = [\"{VIP}\", \"{ANCHOR}\"]\nport = {FRONTEND_PORT}\nbackends = [\n{}]\n\n\
         [[service]]\nname = \"api\"\naddresses = [\"{VIP}\", \"{ANCHOR}\"]\nport = {API_PORT}\nbackends = [\n{}]\n\n\
         [[service]]\nname = \"udp-echo\"\naddresses = [\"{VIP}\"]\nport = {UDP_PORT}\nprotocol = \"udp\"\nbackends = [\n{}]\n",
        backends(FRONTEND_PORT),
        backends(API_PORT),
        backends(UDP_PORT),
    )
}

/// [`base_services`] with `check` (e.g. `{ type = "tcp", inter = "100ms" }`)
/// as the health check of the services on `ports`.
#[must_use]
pub fn base_services_checked(ports: &[u16], check: &str) -> String {
    ports.iter().fold(base_services(), |services, port| {
        services.replace(
            &format!("port = {port}\n"),
            &format!("port = {port}\ncheck = {check}\n"),
        )
    })
}

/// Namespaces, links, addresses and backends; all removed on drop.
pub struct Testbed {
    // Fields drop in order: processes first, then their namespaces.
    pub daemon: Option<Daemon>,
    /// The second node's daemon (a pair only).
    pub daemon2: Option<Daemon>,
    servers: Vec<Option<Nginx>>,
    udp: Vec<UdpResponder>,
    pub client: Netns,
    pub lb: Netns,
    /// The second load balancer (a pair only).
    pub lb2: Option<Netns>,
    pub webs: Vec<Netns>,
    pub switch: Netns,
    pub dir: PathBuf,
    /// More `[dataplane]` keys for the configs the testbed writes.
    pub dataplane_extra: String,
}

impl Testbed {
    /// Builds the testbed; `tag` makes the namespace names unique.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        Self::build(tag, false)
    }

    /// Two load balancers side by side on the public segment (a bridge) and
    /// on the private one, for failover. No floating address is configured:
    /// the nodes' movers add it.
    ///
    /// ```text
    ///  client ns        switch ns: br1 (public)   br0 (private)
    ///  eth0 .10/.11 --- br1 --+-- lb  eth0 .2   eth1 203.0.113.2 --+-- br0 -- web1, web2
    ///                         +-- lb2 eth0 .3   eth1 203.0.113.3 --+
    /// ```
    pub fn pair(tag: &str) -> anyhow::Result<Self> {
        Self::build(tag, true)
    }

    fn build(tag: &str, pair: bool) -> anyhow::Result<Self> {
        let client = Netns::new(&format!("{tag}-client"))?;
        let lb = Netns::new(&format!("{tag}-lb"))?;
        let lb2 = if pair {
            Some(Netns::new(&format!("{tag}-lb2"))?)
        } else {
            None
        };
        let switch = Netns::new(&format!("{tag}-sw"))?;
        let webs = (1..=WEB_ADDRS.len())
            .map(|i| Netns::new(&format!("{tag}-web{i}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let dir = std::env::temp_dir().join(format!("xlb-{tag}"));
        std::fs::create_dir_all(&dir)?;
        let mut bed = Self {
            daemon: None,
            daemon2: None,
            servers: Vec::new(),
            udp: Vec::new(),
            client,
            lb,
            lb2,
            webs,
            switch,
            dir,
            dataplane_extra: String::new(),
        };
        bed.wire().context("wiring the testbed")?;
        // Resolve the neighbours now: on links a few hundred ms old the first
        // ARP request sometimes goes unanswered until the kernel retries a
        // second later, which would fail the daemon's first health checks.
        for node in bed.nodes() {
            for web in WEB_ADDRS {
                node.exec("ping", &["-c", "1", "-W", "3", &web.to_string()])?;
            }
        }
        for public in &NODE_PUBLIC[..bed.nodes().len()] {
            bed.client
                .exec("ping", &["-c", "1", "-W", "3", &public.to_string()])?;
        }
        for (ns, name) in bed.webs.iter().zip(WEB_NAMES) {
            bed.servers.push(Some(Nginx::start(
                ns,
                name,
                &[(FRONTEND_PORT, "frontend"), (API_PORT, "api")],
            )?));
            bed.udp.push(UdpResponder::start(ns, name, UDP_PORT)?);
        }
        Ok(bed)
    }

    /// Stops web server `index`'s nginx (its namespace stays).
    pub fn stop_web(&mut self, index: usize) {
        self.servers[index] = None;
    }

    /// (Re)starts web server `index`'s nginx; `/health` answers `health_status`.
    pub fn start_web(&mut self, index: usize, health_status: u16) -> anyhow::Result<()> {
        self.servers[index] = None;
        self.servers[index] = Some(Nginx::start_with_health(
            &self.webs[index],
            WEB_NAMES[index],
            &[(FRONTEND_PORT, "frontend"), (API_PORT, "api")],
            health_status,
        )?);
        Ok(())
    }

    /// The admin socket of the daemon this testbed starts.
    #[must_use]
    pub fn admin_socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    /// Runs `xlb ARGS` (a CLI command) in the LB namespace; returns its output.
    pub fn xlb(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let binary = crate::daemon::binary()?;
        Ok(self
            .lb
            .command(binary.to_str().context("binary path")?)
            .args(args)
            .output()?)
    }

    /// The load-balancer namespaces: `lb`, then `lb2` in a pair.
    #[must_use]
    pub fn nodes(&self) -> Vec<&Netns> {
        std::iter::once(&self.lb).chain(self.lb2.as_ref()).collect()
    }

    /// Node `i`'s namespace.
    #[must_use]
    pub fn node(&self, i: usize) -> &Netns {
        self.nodes()[i]
    }

    fn wire(&self) -> anyhow::Result<()> {
        // Public side: a direct link for one LB, a bridge for a pair.
        if self.lb2.is_some() {
            self.switch.ip(&["link", "add", "br1", "type", "bridge"])?;
            self.switch.ip(&["link", "set", "br1", "up"])?;
            veth(&self.client, "eth0", &self.switch, "client", Some("br1"))?;
            for (i, node) in self.nodes().into_iter().enumerate() {
                veth(
                    node,
                    "eth0",
                    &self.switch,
                    &format!("lb{}pub", i + 1),
                    Some("br1"),
                )?;
            }
        } else {
            veth(&self.client, "eth0", &self.lb, "eth0", None)?;
            for vip in [VIP, ANCHOR] {
                self.lb
                    .ip(&["addr", "add", &format!("{vip}/32"), "dev", "eth0"])?;
            }
        }
        for addr in CLIENT_ADDRS {
            self.client
                .ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        }
        // Private side: a bridge joins the LBs and the web servers.
        self.switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        self.switch.ip(&["link", "set", "br0", "up"])?;
        for (i, node) in self.nodes().into_iter().enumerate() {
            let port = if i == 0 {
                "lb".to_owned()
            } else {
                format!("lb{}", i + 1)
            };
            veth(node, "eth1", &self.switch, &port, Some("br0"))?;
            node.ip(&["addr", "add", &format!("{}/24", NODE_PUBLIC[i]), "dev", "eth0"])?;
            node.ip(&["addr", "add", &format!("{}/24", NODE_PRIVATE[i]), "dev", "eth1"])?;
            // As on an Ubuntu droplet: loose reverse-path filtering.
            node.sysctl("net.ipv4.conf.all.rp_filter", "2")?;
        }
        for (i, (ns, addr)) in self.webs.iter().zip(WEB_ADDRS).enumerate() {
            let port = format!("web{}", i + 1);
            veth(ns, "eth0", &self.switch, &port, Some("br0"))?;
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        }
        Ok(())
    }

    /// Writes a config with the testbed's data plane settings and `services`.
    pub fn write_config(&self, name: &str, services: &str) -> anyhow::Result<PathBuf> {
        self.write_node_config(0, name, services)
    }

    /// Node `i`'s admin socket.
    #[must_use]
    pub fn node_admin_socket(&self, i: usize) -> PathBuf {
        if i == 0 {
            self.admin_socket()
        } else {
            self.dir.join(format!("admin-{i}.sock"))
        }
    }

    /// Writes node `i`'s config: its data plane settings, then `rest`.
    pub fn write_node_config(&self, i: usize, name: &str, rest: &str) -> anyhow::Result<PathBuf> {
        let text = format!(
            "[dataplane]\ninterfaces = [\"eth0\", \"eth1\"]\nsnat_address = \"{}\"\nsnat_ports = \"20000-29999\"\n{}\n\n\
             [admin]\nsocket = \"{}\"\n\n{rest}",
            NODE_PRIVATE[i],
            self.dataplane_extra,
            self.node_admin_socket(i).display()
        );
        let path = self.dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// A `[vrrp]` section for node `i` of a pair: VRRP over the private
    /// segment to the other node (unicast, as in the reference), the
    /// floating IP on eth0 by the local mover; `extra` goes into `[vrrp]`.
    #[must_use]
    pub fn vrrp_section(&self, i: usize, priority: u8, extra: &str) -> String {
        format!(
            "[vrrp]\ninterface = \"eth1\"\nvrid = {VRID}\npriority = {priority}\nsource_address = \"{}\"\n\
             unicast_peers = [\"{}\"]\n{extra}\n\n[vrrp.local]\ninterface = \"eth0\"\naddresses = [\"{VIP}/32\"]\n",
            NODE_PRIVATE[i],
            NODE_PRIVATE[1 - i],
        )
    }

    /// Starts node `i`'s daemon with `rest` after the data plane settings.
    pub fn start_node(&mut self, i: usize, rest: &str) -> anyhow::Result<&mut Daemon> {
        self.start_node_with_args(i, rest, &[])
    }

    /// Starts node `i`'s daemon with `rest` after the data plane settings
    /// and `args` after `xlb run --config FILE`.
    pub fn start_node_with_args(
        &mut self,
        i: usize,
        rest: &str,
        args: &[&str],
    ) -> anyhow::Result<&mut Daemon> {
        let config = self.write_node_config(i, &format!("xlb-{i}.toml"), rest)?;
        let daemon = Daemon::start(self.node(i), &config, args)?;
        let slot = if i == 0 {
            &mut self.daemon
        } else {
            &mut self.daemon2
        };
        *slot = Some(daemon);
        slot.as_mut().context("just set")
    }

    /// Node `i`'s daemon.
    pub fn node_daemon(&mut self, i: usize) -> Option<&mut Daemon> {
        if i == 0 {
            self.daemon.as_mut()
        } else {
            self.daemon2.as_mut()
        }
    }

    /// Takes node `i`'s daemon out (to stop or kill it).
    pub fn take_node_daemon(&mut self, i: usize) -> Option<Daemon> {
        if i == 0 {
            self.daemon.take()
        } else {
            self.daemon2.take()
        }
    }

    /// `xlb status --json` of node `i`.
    pub fn node_status(&self, i: usize) -> anyhow::Result<serde_json::Value> {
        let socket = self.node_admin_socket(i);
        let binary = crate::daemon::binary()?;
        let output = self
            .node(i)
            .command(binary.to_str().context("binary path")?)
            .args(["status", "--json", "--socket"])
            .arg(&socket)
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "xlb status: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    /// Node `i`'s VRRP state ("MASTER", ...), or None if it does not answer.
    #[must_use]
    pub fn vrrp_state(&self, i: usize) -> Option<String> {
        let status = self.node_status(i).ok()?;
        status["vrrp"]["state"].as_str().map(str::to_owned)
    }

    /// Waits until node `i` reports VRRP state `state`; returns its status.
    pub fn wait_vrrp_state(
        &self,
        i: usize,
        state: &str,
        timeout: std::time::Duration,
    ) -> anyhow::Result<serde_json::Value> {
        self.wait_vrrp(i, &format!("state {state}"), timeout, |vrrp| {
            vrrp["state"] == state
        })
    }

    /// Waits until node `i`'s VRRP status (the `vrrp` object of its status)
    /// satisfies `condition`; returns the whole status. Fails naming `what`
    /// and the last status seen.
    pub fn wait_vrrp(
        &self,
        i: usize,
        what: &str,
        timeout: std::time::Duration,
        condition: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let mut last = String::from("no answer yet");
        crate::wait::until_some(&format!("node {i}: {what}"), timeout, || {
            match self.node_status(i) {
                Ok(status) if condition(&status["vrrp"]) => return Some(status),
                Ok(status) => last = status["vrrp"].to_string(),
                Err(e) => last = format!("no answer: {e:#}"),
            }
            None
        })
        .map_err(|e| anyhow::anyhow!("{e}; last seen: {last}"))
    }

    /// Opens `flows` UDP flows through the floating IP to the UDP service,
    /// from the client's first address (one datagram each, from distinct
    /// source ports from 1024 up, through a raw socket: no socket waits for
    /// the answers), paced so that the links keep up: a table of tracked
    /// entries (two per flow) in a second or two.
    pub fn open_udp_flows(&self, flows: u16) -> anyhow::Result<()> {
        use socket2::{Domain, Protocol, Socket, Type};
        let to = std::net::SocketAddr::from((VIP, 0));
        let packets: Vec<Vec<u8>> = (0..flows)
            .map(|i| {
                let frame = crate::packet::Frame::udp((CLIENT_ADDRS[0], 1024 + i), (VIP, UDP_PORT), b"fill");
                frame.build()[14..].to_vec()
            })
            .collect();
        self.client.run(move || -> std::io::Result<()> {
            let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))?;
            for batch in packets.chunks(500) {
                for packet in batch {
                    socket.send_to(packet, &to.into())?;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        })??;
        Ok(())
    }

    /// One `GET /metrics` of node `i`'s daemon (the default listener, in its
    /// namespace): the whole response.
    pub fn scrape_metrics(&self, i: usize) -> anyhow::Result<String> {
        self.node(i).run(|| -> anyhow::Result<String> {
            let mut stream =
                std::net::TcpStream::connect(("127.0.0.1", 8404)).context("connect to metrics")?;
            Ok(crate::http::exchange(
                &mut stream,
                "GET /metrics HTTP/1.0\r\n\r\n",
                Duration::from_secs(10),
            )?)
        })?
    }

    /// Whether node `i` has the floating IP on its public interface.
    pub fn has_vip(&self, i: usize) -> anyhow::Result<bool> {
        let addresses = self.node(i).ip(&["-4", "-o", "addr", "show", "dev", "eth0"])?;
        Ok(addresses.contains(&format!(" {VIP}/32 ")))
    }

    /// The MAC of node `i`'s public interface.
    pub fn node_public_mac(&self, i: usize) -> anyhow::Result<String> {
        let link = self.node(i).ip(&["-o", "link", "show", "dev", "eth0"])?;
        link.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(str::to_owned)
            .context("no MAC on eth0")
    }

    /// The MAC the client's neighbour table has for the floating IP.
    pub fn client_vip_mac(&self) -> anyhow::Result<Option<String>> {
        let entry = self
            .client
            .ip(&["neigh", "show", &VIP.to_string(), "dev", "eth0"])?;
        Ok(entry
            .split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .map(str::to_owned))
    }

    /// Starts the daemon on the LB with `services`.
    pub fn start_lb(&mut self, services: &str, extra_args: &[&str]) -> anyhow::Result<&mut Daemon> {
        let config = self.write_config("xlb.toml", services)?;
        self.daemon = Some(Daemon::start(&self.lb, &config, extra_args)?);
        self.daemon.as_mut().context("just set")
    }

    /// A TCP connection from the client namespace, from `source` (port 0: any).
    pub fn connect(
        &self,
        source: (Ipv4Addr, u16),
        to: (Ipv4Addr, u16),
    ) -> anyhow::Result<std::net::TcpStream> {
        self.client.run(move || connect_from(source, to))?
    }

    /// One `GET /` on a fresh connection from the client namespace (from
    /// `CLIENT_ADDRS[0]`) to `to`: the answering backend's body. Connecting
    /// and each read of the answer are bounded (5 s), so a load balancer
    /// that drops the connection fails the request instead of hanging it.
    pub fn request(&self, to: (Ipv4Addr, u16)) -> anyhow::Result<String> {
        self.request_with_timeouts(to, CONNECT_TIMEOUT, ANSWER_TIMEOUT)
    }

    /// [`Testbed::request`] with its own bounds: `connect` for the
    /// connection, `answer` for each read of the answer.
    pub fn request_with_timeouts(
        &self,
        to: (Ipv4Addr, u16),
        connect: Duration,
        answer: Duration,
    ) -> anyhow::Result<String> {
        let mut stream = self
            .client
            .run(move || connect_from_within((CLIENT_ADDRS[0], 0), to, connect))??;
        stream.set_read_timeout(Some(answer))?;
        crate::http::get(&mut stream).with_context(|| format!("answer from {}:{}", to.0, to.1))
    }

    /// `n` [`Testbed::request`]s to `to`, one after the other: how often
    /// each body (each backend) answered. Fails naming the first request
    /// that did not get an answer.
    pub fn tally(&self, to: (Ipv4Addr, u16), n: usize) -> anyhow::Result<HashMap<String, usize>> {
        let mut counts = HashMap::new();
        for i in 0..n {
            let body = self
                .request(to)
                .with_context(|| format!("request {} of {n}", i + 1))?;
            *counts.entry(body).or_insert(0) += 1;
        }
        Ok(counts)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How long [`connect_from`] and [`Testbed::request`] wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Testbed::request`] waits for each read of the answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP connection bound to `source`, with a bounded connect time (5 s).
pub fn connect_from(source: (Ipv4Addr, u16), to: (Ipv4Addr, u16)) -> anyhow::Result<std::net::TcpStream> {
    connect_from_within(source, to, CONNECT_TIMEOUT)
}

/// A TCP connection bound to `source`; connecting fails after `timeout`.
pub fn connect_from_within(
    source: (Ipv4Addr, u16),
    to: (Ipv4Addr, u16),
    timeout: Duration,
) -> anyhow::Result<std::net::TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    // std has no bind-before-connect.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket
        .bind(&std::net::SocketAddr::from(source).into())
        .map_err(|e| anyhow::anyhow!("bind {}:{}: {e}", source.0, source.1))?;
    socket
        .connect_timeout(&std::net::SocketAddr::from(to).into(), timeout)
        .map_err(|e| anyhow::anyhow!("connect {}:{}: {e}", to.0, to.1))?;
    Ok(socket.into())
}
