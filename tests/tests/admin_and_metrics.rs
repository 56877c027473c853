//! The admin API (socket and token-guarded TCP listener), the CLI over it,
//! and the Prometheus endpoint, against a running daemon. Needs root.

use std::{
    io::{Read, Write},
    net::TcpStream,
    os::unix::fs::PermissionsExt,
};

use lb_tests::{
    http,
    testbed::{base_services, Testbed, CLIENT_ADDRS, FRONTEND_PORT, VIP},
    unique_tag,
};

fn request(bed: &Testbed) -> String {
    let mut stream = bed
        .connect((CLIENT_ADDRS[0], 0), (VIP, FRONTEND_PORT))
        .expect("connect");
    http::get(&mut stream).expect("answer")
}

fn cli(bed: &Testbed, args: &[&str]) -> std::process::Output {
    let socket = bed.admin_socket();
    let mut full = args.to_vec();
    full.extend_from_slice(&["--socket", socket.to_str().unwrap()]);
    bed.xlb(&full).unwrap()
}

fn status_json(bed: &Testbed) -> serde_json::Value {
    let out = cli(bed, &["status", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn backend<'a>(status: &'a serde_json::Value, service: &str, name: &str) -> &'a serde_json::Value {
    let service = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service)
        .unwrap();
    service["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap()
}

/// A plain HTTP/1.0 request from inside the LB namespace.
fn http_in_lb(bed: &Testbed, port: u16, request_text: String) -> String {
    bed.lb
        .run(move || {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            stream.write_all(request_text.as_bytes()).unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
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
        assert_eq!(request(&bed), "web2 frontend");
        assert_eq!(
            http::get(&mut long).unwrap(),
            first,
            "the drained backend keeps its connection"
        );
    }
    let status = status_json(&bed);
    let web1 = backend(&status, "frontend", "web1");
    assert_eq!(web1["state"], "DRAIN", "{web1}");
    assert_eq!(web1["active_connections"], 1, "{web1}");

    let unknown = cli(&bed, &["drain", "frontend", "nosuch"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("nosuch"));

    assert!(cli(&bed, &["enable", "frontend", "web1"]).status.success());
    let answers: Vec<String> = (0..4).map(|_| request(&bed)).collect();
    assert!(answers.contains(&"web1 frontend".to_owned()), "{answers:?}");

    // `xlb reload` over the socket: a broken file is refused with its line,
    // the running config stays; the good file reloads.
    let config = bed.dir.join("xlb.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace("port = 5000", "port = 0")).unwrap();
    let refused = cli(&bed, &["reload"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("xlb.toml:") && stderr.contains("port 0"),
        "{stderr}"
    );
    assert_eq!(request(&bed).len(), "web1 frontend".len());
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
    for _ in 0..N {
        request(&bed);
    }
    let response = http_in_lb(&bed, 8404, "GET /metrics HTTP/1.0\r\n\r\n".into());
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
    // A non-root user: refused by the file mode, and, with the mode opened
    // up, by the daemon's peer-credential check.
    let binary = lb_tests::daemon::binary().unwrap();
    let as_nobody = || {
        bed.lb
            .command("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&binary)
            .args(["status", "--socket", socket.to_str().unwrap()])
            .output()
            .unwrap()
    };
    assert!(!as_nobody().status.success());
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody();
    assert!(
        !out.status.success(),
        "a non-root peer was served: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(cli(&bed, &["status"]).status.success(), "root is served");

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
