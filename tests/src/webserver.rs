//! Backends: nginx answering on the frontend and API ports with its own
//! name, and a UDP responder doing the same.

use std::{
    net::UdpSocket,
    path::PathBuf,
    process::{Child, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::netns::Netns;

/// An nginx instance in a namespace, stopped on drop.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx in `ns`; `GET /` on port P answers `"{name} {label}"` for
    /// each `(P, label)` in `ports`.
    pub fn start(ns: &Netns, name: &str, ports: &[(u16, &str)]) -> anyhow::Result<Self> {
        Self::start_with_health(ns, name, ports, 200)
    }

    /// As [`Nginx::start`]; `GET /health` answers with `health_status`.
    pub fn start_with_health(
        ns: &Netns,
        name: &str,
        ports: &[(u16, &str)],
        health_status: u16,
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(crate::unique_tag("xlb-nginx-"));
        std::fs::create_dir_all(&dir)?;
        let d = dir.display();
        let servers: String = ports
            .iter()
            .map(|(port, label)| {
                format!(
                    "  server {{ listen {port} reuseport backlog=4096; location / {{ default_type text/plain; return 200 \"{name} {label}\\n\"; }} \
                     location = /health {{ default_type text/plain; return {health_status} \"{name} health\\n\"; }} }}\n"
                )
            })
            .collect();
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 120s;\n\
               client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{servers}}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = ns
            .command("nginx")
            .args(["-c", conf_path.to_str().context("path")?, "-p"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn nginx (is it installed?)")?;
        let nginx = Self { child, dir };
        // Ready when every port accepts.
        for (port, _) in ports {
            let port = *port;
            crate::wait::until(
                &format!("nginx in {} listens on {port}", ns.name()),
                Duration::from_secs(10),
                || {
                    ns.run(move || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
                        .unwrap_or(false)
                },
            )
            .with_context(|| std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default())?;
        }
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would orphan
        // them, still serving on the inherited sockets).
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A UDP responder: every datagram is answered with `"{name} {payload}"`.
pub struct UdpResponder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpResponder {
    pub fn start(ns: &Netns, name: &str, port: u16) -> anyhow::Result<Self> {
        let socket = ns.run(move || UdpSocket::bind(("0.0.0.0", port)))??;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let name = name.to_owned();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    let reply = format!("{name} {}", String::from_utf8_lossy(&buf[..n]));
                    let _ = socket.send_to(reply.as_bytes(), peer);
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
