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

use std::{net::Ipv4Addr, path::PathBuf};

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

/// Namespaces, links, addresses and backends; all removed on drop.
pub struct Testbed {
    // Fields drop in order: processes first, then their namespaces.
    pub daemon: Option<Daemon>,
    servers: Vec<Option<Nginx>>,
    udp: Vec<UdpResponder>,
    pub client: Netns,
    pub lb: Netns,
    pub webs: Vec<Netns>,
    switch: Netns,
    pub dir: PathBuf,
}

impl Testbed {
    /// Builds the testbed; `tag` makes the namespace names unique.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let client = Netns::new(&format!("{tag}-client"))?;
        let lb = Netns::new(&format!("{tag}-lb"))?;
        let switch = Netns::new(&format!("{tag}-sw"))?;
        let webs = (1..=WEB_ADDRS.len())
            .map(|i| Netns::new(&format!("{tag}-web{i}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let dir = std::env::temp_dir().join(format!("xlb-{tag}"));
        std::fs::create_dir_all(&dir)?;
        let mut bed = Self {
            daemon: None,
            servers: Vec::new(),
            udp: Vec::new(),
            client,
            lb,
            webs,
            switch,
            dir,
        };
        bed.wire().context("wiring the testbed")?;
        // Resolve the neighbours now: on links a few hundred ms old the first
        // ARP request sometimes goes unanswered until the kernel retries a
        // second later, which would fail the daemon's first health checks.
        for web in WEB_ADDRS {
            bed.lb.exec("ping", &["-c", "1", "-W", "3", &web.to_string()])?;
        }
        bed.client
            .exec("ping", &["-c", "1", "-W", "3", &LB_PUBLIC.to_string()])?;
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

    fn wire(&self) -> anyhow::Result<()> {
        // Public side.
        veth(&self.client, "eth0", &self.lb, "eth0", None)?;
        for addr in CLIENT_ADDRS {
            self.client
                .ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        }
        self.lb
            .ip(&["addr", "add", &format!("{LB_PUBLIC}/24"), "dev", "eth0"])?;
        for vip in [VIP, ANCHOR] {
            self.lb
                .ip(&["addr", "add", &format!("{vip}/32"), "dev", "eth0"])?;
        }
        // Private side: a bridge joins the LB and the web servers.
        self.switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        self.switch.ip(&["link", "set", "br0", "up"])?;
        veth(&self.lb, "eth1", &self.switch, "lb", Some("br0"))?;
        self.lb
            .ip(&["addr", "add", &format!("{LB_PRIVATE}/24"), "dev", "eth1"])?;
        for (i, (ns, addr)) in self.webs.iter().zip(WEB_ADDRS).enumerate() {
            let port = format!("web{}", i + 1);
            veth(ns, "eth0", &self.switch, &port, Some("br0"))?;
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        }
        // As on an Ubuntu droplet: loose reverse-path filtering.
        self.lb.sysctl("net.ipv4.conf.all.rp_filter", "2")?;
        Ok(())
    }

    /// Writes a config with the testbed's data plane settings and `services`.
    pub fn write_config(&self, name: &str, services: &str) -> anyhow::Result<PathBuf> {
        let text = format!(
            "[dataplane]\ninterfaces = [\"eth0\", \"eth1\"]\nsnat_address = \"{LB_PRIVATE}\"\nsnat_ports = \"20000-29999\"\n\n\
             [admin]\nsocket = \"{}\"\n\n{services}",
            self.admin_socket().display()
        );
        let path = self.dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
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
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP connection bound to `source`, with a bounded connect time.
pub fn connect_from(source: (Ipv4Addr, u16), to: (Ipv4Addr, u16)) -> anyhow::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    // std has no bind-before-connect; do it with libc.
    // SAFETY: plain socket calls on a descriptor we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&raw const one).cast(),
            4,
        );
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as u32,
        );
        let sockaddr = |(addr, port): (Ipv4Addr, u16)| libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(addr.octets()),
            },
            sin_zero: [0; 8],
        };
        let len = size_of::<libc::sockaddr_in>() as u32;
        let local = sockaddr(source);
        if libc::bind(fd, (&raw const local).cast(), len) != 0 {
            return Err(anyhow::anyhow!(
                "bind {}:{}: {}",
                source.0,
                source.1,
                std::io::Error::last_os_error()
            ));
        }
        let remote = sockaddr(to);
        if libc::connect(fd, (&raw const remote).cast(), len) != 0 {
            return Err(anyhow::anyhow!(
                "connect {}:{}: {}",
                to.0,
                to.1,
                std::io::Error::last_os_error()
            ));
        }
        Ok(stream)
    }
}
