//! The admin API (socket and token-guarded TCP listener), the CLI over it,
//! and the Prometheus endpoint, against a running daemon. Needs root.

use std::{net::TcpStream, os::unix::fs::PermissionsExt, time::Duration};

use lb_tests::{
    http, status,
    testbed::{base_services, Testbed, API_PORT, CLIENT_ADDRS, FRONTEND_PORT, VIP},
    unique_tag, wait,
};

/// The bodies of `n` requests to the VIP's `port`, sorted.
fn bodies(bed: &Testbed, port: u16, n: usize) -> Vec<String> {
    let mut bodies: Vec<String> = (0..n)
        .map(|_| {
            bed.request((VIP, port))
                .unwrap_or_else(|e| panic!("request to port {port}: {e:#}"))
        })
        .collect();
    bodies.sort();
    bodies
}

fn cli(bed: &Testbed, args: &[&str]) -> std::process::Output {
    let socket = bed.admin_socket();
    let mut full = args.to_vec();
    full.extend_from_slice(&["--socket", socket.to_str().unwrap()]);
    bed.xlb(&full).unwrap()
}

/// A plain HTTP/1.0 request from inside the LB namespace.
fn http_in_lb(bed: &Testbed, port: u16, request_text: String) -> String {
    bed.lb
        .run(move || {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            http::exchange(&mut stream, &request_text, Duration::from_secs(10)).expect("HTTP exchange")
        })
        .unwrap()
}

#[test]
fn drain_keeps_established_connections_and_steers_new_ones_away() {
    let mut bed = Testbed::new(&unique_tag("xa")).unwrap();
    bed.start_lb(&base_services(), &[]).unwrap();
    let mut long = bed.connect((CLIENT_ADDRS[0], 0), (VIP, FRONTEND_PORT)).unwrap();
    let first = http::get(&mut long).unwrap();
    assert_eq!(first, "web1 frontend");

    let out = cli(&bed, &["drain", "frontend", "web1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for _ in 0..10 {
        assert_eq!(bed.request((VIP, FRONTEND_PORT)).unwrap(), "web2 frontend");
        assert_eq!(
            http::get(&mut long).unwrap(),
            first,
            "the drained backend keeps its connection"
        );
    }
    let json = bed.node_status(0).unwrap();
    let web1 = status::backend(&json, "frontend", "web1").unwrap();
    assert_eq!(web1["state"], "DRAIN", "{web1}");
    // The census comes from the sweeper's passes (every 2 s).
    wait::until("web1's connection in the census", Duration::from_secs(10), || {
        let json = bed.node_status(0).unwrap();
        status::backend(&json, "frontend", "web1").is_ok_and(|web1| web1["active_connections"] == 1)
    })
    .unwrap();

    let unknown = cli(&bed, &["drain", "frontend", "nosuch"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("nosuch"));

    assert!(cli(&bed, &["enable", "frontend", "web1"]).status.success());
    assert_eq!(bodies(&bed, FRONTEND_PORT, 2), ["web1 frontend", "web2 frontend"]);

    // `xlb reload` over the socket: a broken file is refused with its line,
    // the running config stays; the good file reloads.
    let config = bed.dir.join("xlb.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    let api_port = format!("port = {API_PORT}\n");
    assert_eq!(good.matches(&api_port).count(), 1, "{good}");
    std::fs::write(&config, good.replace(&api_port, "port = 0\n")).unwrap();
    let refused = cli(&bed, &["reload"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("xlb.toml:") && stderr.contains("port 0"),
        "{stderr}"
    );
    // Both services keep their old config: the frontend, untouched by the
    // broken file, and the api service it broke, still on its old port
    // with both backends.
    assert_eq!(bodies(&bed, FRONTEND_PORT, 2), ["web1 frontend", "web2 frontend"]);
    assert_eq!(bodies(&bed, API_PORT, 2), ["web1 api", "web2 api"]);
    let json = bed.node_status(0).unwrap();
    let api = status::service(&json, "api").unwrap();
    assert_eq!(api["port"], API_PORT, "{api}");
    std::fs::write(&config, &good).unwrap();
    let reloaded = cli(&bed, &["reload"]);
    assert!(
        reloaded.status.success(),
        "{}",
        String::from_utf8_lossy(&reloaded.stderr)
    );

    // `xlb status` (human) names the services and backends.
    let human = cli(&bed, &["status"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("frontend") && text.contains("web2") && text.contains("UP"),
        "{text}"
    );
}

#[test]
fn metrics_count_exactly_and_parse() {
    let mut bed = Testbed::new(&unique_tag("xa")).unwrap();
    bed.start_lb(&base_services(), &[]).unwrap();
    const N: u64 = 37;
    for i in 0..N {
        bed.request((VIP, FRONTEND_PORT))
            .unwrap_or_else(|e| panic!("request {i}: {e:#}"));
    }
    let response = bed.scrape_metrics(0).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.") && head.contains(" 200"), "{head}");
    let scrape =
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("text format parses");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
    };
    assert_eq!(
        value("xlb_backend_sessions_total", &[("proxy", "frontend")]),
        N as f64
    );
    let per_server = value(
        "xlb_server_sessions_total",
        &[("proxy", "frontend"), ("server", "web1")],
    ) + value(
        "xlb_server_sessions_total",
        &[("proxy", "frontend"), ("server", "web2")],
    );
    assert_eq!(per_server, N as f64);
    assert_eq!(
        value(
            "xlb_server_status",
            &[("proxy", "frontend"), ("server", "web1"), ("state", "UP")]
        ),
        1.0
    );
    assert_eq!(value("xlb_backend_active_servers", &[("proxy", "api")]), 2.0);
    assert_eq!(value("xlb_backend_sessions_total", &[("proxy", "api")]), 0.0);
}

#[test]
fn admin_socket_is_for_root_and_the_tcp_listener_needs_the_token() {
    let mut bed = Testbed::new(&unique_tag("xa")).unwrap();
    let token_file = bed.dir.join("token");
    std::fs::write(&token_file, "s3cret-token-0123456789\n").unwrap();
    let services = format!("{}\n", base_services());
    let config_extra = format!(
        "listen = \"127.0.0.1:9901\"\ntoken_file = \"{}\"\n",
        token_file.display()
    );
    // The testbed's config has an [admin] table with the socket; add the listener to it.
    let config = bed.write_config("xlb.toml", &services).unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[admin]\n",
        &format!("[admin]\n{config_extra}"),
        1,
    );
    std::fs::write(&config, &text).unwrap();
    bed.daemon = Some(lb_tests::daemon::Daemon::start(&bed.lb, &config, &[]).unwrap());

    let socket = bed.admin_socket();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin socket mode");
    // A non-root user (uid 65534): refused by the file mode, and, with the
    // mode opened up, by the daemon's peer-credential check. Each refusal
    // has its own message: the kernel's EACCES names the socket, the
    // daemon's 403 is an HTTP answer.
    let binary = lb_tests::daemon::binary().unwrap();
    let as_nobody = |args: &[&str]| {
        bed.lb
            .command("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&binary)
            .args(args)
            .output()
            .unwrap()
    };
    // First, that xlb runs at all as that user: setpriv is there, the
    // binary and its directories are executable by others.
    let version = as_nobody(&["--version"]);
    assert!(
        version.status.success(),
        "xlb --version as uid 65534: {}",
        String::from_utf8_lossy(&version.stderr)
    );
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("xlb "),
        "{}",
        String::from_utf8_lossy(&version.stdout)
    );
    let status_args = ["status", "--socket", socket.to_str().unwrap()];
    let by_mode = as_nobody(&status_args);
    assert!(!by_mode.status.success());
    assert_eq!(
        String::from_utf8_lossy(&by_mode.stderr).trim_end(),
        format!(
            "xlb: permission denied: the admin socket is for root ({})",
            socket.display()
        )
    );
    assert!(by_mode.stdout.is_empty());

    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let by_daemon = as_nobody(&status_args);
    assert!(
        !by_daemon.status.success(),
        "a non-root peer was served: {}",
        String::from_utf8_lossy(&by_daemon.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&by_daemon.stderr).trim_end(),
        "xlb: permission denied: the admin socket is for root (HTTP 403)"
    );
    assert!(by_daemon.stdout.is_empty());
    let refusal = bed
        .daemon
        .as_mut()
        .unwrap()
        .wait_for_line("admin socket: refused a non-root peer", Duration::from_secs(10))
        .unwrap();
    assert!(refusal.contains("uid 65534"), "{refusal}");
    // The same opened-up socket serves root.
    let root = cli(&bed, &["status", "--json"]);
    assert!(
        root.status.success(),
        "root is served: {}",
        String::from_utf8_lossy(&root.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&root.stdout).unwrap();
    status::service(&json, "frontend").unwrap();

    let get = |auth: Option<&str>| {
        let header = auth
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        http_in_lb(
            &bed,
            9901,
            format!("GET /v1/status HTTP/1.0\r\nHost: x\r\n{header}\r\n"),
        )
    };
    for refused in [get(None), get(Some("wrong-token-0123456789"))] {
        assert!(
            refused.starts_with("HTTP/1.") && refused.contains(" 401"),
            "{refused}"
        );
        assert!(!refused.contains("s3cret"), "the token must not be echoed");
    }
    let ok = get(Some("s3cret-token-0123456789"));
    assert!(ok.contains(" 200") && ok.contains("\"services\""), "{ok}");
    assert!(
        !bed.daemon.as_ref().unwrap().log_text().contains("s3cret"),
        "the token must not be logged"
    );
}
