//! A minimal HTTP/1.1 client over a socket the caller opened (possibly in
//! another namespace): enough to ask a web server for its name.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    time::Duration,
};

use anyhow::{bail, Context};

/// Sends `GET /` on `stream` and returns the body. The connection stays
/// usable for further requests (keep-alive). Waits for the answer as long as
/// the stream's read time-out says, 5 s if it has none.
pub fn get(stream: &mut TcpStream) -> anyhow::Result<String> {
    if stream.read_timeout()?.is_none() {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    }
    stream.write_all(b"GET / HTTP/1.1\r\nHost: xlb-test\r\n\r\n")?;
    let mut reader = BufReader::new(&mut *stream);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if !status.starts_with("HTTP/1.1 200") {
        bail!("unexpected status line {status:?}");
    }
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed inside the headers");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>().context("content-length")?);
            }
        }
    }
    let mut body = vec![0; length.context("no content-length")?];
    reader.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).trim().to_owned())
}

/// Sends `request` (raw HTTP, one request) on a fresh `stream` and returns
/// the whole answer, head and body, read until the server closes. Bounded by
/// `timeout` for each read and write, so a silent server fails instead of
/// hanging.
pub fn exchange(stream: &mut TcpStream, request: &str, timeout: Duration) -> std::io::Result<String> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// `GET path` with `Connection: close`, for [`exchange`].
#[must_use]
pub fn get_and_close(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: xlb-test\r\nConnection: close\r\n\r\n")
}
