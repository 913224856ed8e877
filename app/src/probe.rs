//! `selfheal-app probe URL`: a minimal HTTP/1.1 GET for `helm test` and exec probes in an
//! image without curl. Plain `http://` only (in-cluster / loopback).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::ProbeArgs;
use crate::{Error, Result};

/// Largest answer read (status line, headers and the start of the body).
const MAX_RESPONSE_BYTES: u64 = 256 * 1024;

/// Exit code: answered 2xx.
pub const EXIT_OK: i32 = 0;
/// Exit code: answered non-2xx, unreachable, timed out or malformed answer.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: the URL is not a usable `http://` URL (same as clap's usage errors).
pub const EXIT_USAGE: i32 = 2;

/// A parsed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResponse {
    /// HTTP status code.
    pub status: u16,
    /// Body (lossy UTF-8; chunked bodies are returned raw).
    pub body: String,
}

/// Runs the subcommand: prints one line and returns the exit code.
pub async fn run(args: &ProbeArgs) -> i32 {
    let timeout = Duration::from_millis(args.timeout_ms);
    match get(&args.url, timeout).await {
        Ok(r) if (200..300).contains(&r.status) => {
            println!("ok: {} answered {}", args.url, r.status);
            EXIT_OK
        }
        Ok(r) => {
            let snippet: String = r.body.split_whitespace().collect::<Vec<_>>().join(" ");
            let snippet: String = snippet.chars().take(200).collect();
            eprintln!("fail: {} answered {}: {}", args.url, r.status, snippet);
            EXIT_FAILED
        }
        Err(e @ Error::InvalidProbeUrl { .. }) => {
            eprintln!("fail: {e}");
            EXIT_USAGE
        }
        Err(e) => {
            eprintln!("fail: {e}");
            EXIT_FAILED
        }
    }
}

/// GETs `url` (`http://host[:port][/path]`) within `timeout`.
pub async fn get(url: &str, timeout: Duration) -> Result<ProbeResponse> {
    request("GET", url, &[], "", timeout).await
}

/// Sends one request with `Connection: close` and reads the answer. Also used by the tests.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> Result<ProbeResponse> {
    let target = Target::parse(url)?;
    let failed = |reason: String| Error::ProbeFailed {
        url: url.to_owned(),
        reason,
    };
    let exchange = async {
        let mut stream = TcpStream::connect(target.connect_addr.as_str())
            .await
            .map_err(|e| failed(format!("connect: {e}")))?;
        let mut req = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: selfheal-app-probe/{}\r\nAccept: */*\r\nConnection: close\r\n",
            target.path,
            target.host_header,
            env!("CARGO_PKG_VERSION"),
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method != "GET" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| failed(format!("send: {e}")))?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| failed(format!("read: {e}")))?;
        parse_response(&raw).ok_or_else(|| failed("malformed HTTP answer".into()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| failed(format!("no answer within {} ms", timeout.as_millis())))?
}

#[derive(Debug, PartialEq, Eq)]
struct Target {
    connect_addr: String,
    host_header: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidProbeUrl {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("http://"))
            .map(|_| &url[7..])
            .ok_or_else(|| bad("only http:// URLs are supported"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.is_empty()
            || authority.contains('@')
            || authority.contains(char::is_whitespace)
        {
            return Err(bad("missing or unsupported host"));
        }
        if path.contains(char::is_whitespace) {
            return Err(bad("path must not contain whitespace"));
        }
        let has_port = match authority.rfind(':') {
            Some(i) => !authority[i..].contains(']'),
            None => false,
        };
        let connect_addr = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            connect_addr,
            host_header: authority.to_owned(),
            path,
        })
    }
}

fn parse_response(raw: &[u8]) -> Option<ProbeResponse> {
    let text = String::from_utf8_lossy(raw);
    let status_line = text.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some(ProbeResponse { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_are_split_for_connect_host_and_path() {
        let t = Target::parse("http://127.0.0.1:8080/ready").unwrap();
        assert_eq!(t.connect_addr, "127.0.0.1:8080");
        assert_eq!(t.host_header, "127.0.0.1:8080");
        assert_eq!(t.path, "/ready");
        let t = Target::parse("HTTP://svc.ns").unwrap();
        assert_eq!(t.connect_addr, "svc.ns:80");
        assert_eq!(t.path, "/");
        let t = Target::parse("http://[::1]/x?y=1").unwrap();
        assert_eq!(t.connect_addr, "[::1]:80");
        assert_eq!(t.path, "/x?y=1");
        let t = Target::parse("http://h:1?q").unwrap();
        assert_eq!(t.path, "/?q");
    }

    #[test]
    fn non_http_urls_are_usage_errors() {
        for url in ["https://x/", "ftp://x", "x:80", "http://", "http://user@h/"] {
            assert!(
                matches!(Target::parse(url), Err(Error::InvalidProbeUrl { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn status_line_and_body_are_parsed() {
        let r = parse_response(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\nno")
            .unwrap();
        assert_eq!(
            r,
            ProbeResponse {
                status: 503,
                body: "no".into()
            }
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n").is_none());
        assert!(parse_response(b"").is_none());
    }
}
