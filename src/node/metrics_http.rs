//! The `/metrics` HTTP endpoint: a small HTTP/1.1 responder on the control side's tokio
//! runtime, never on a packet thread. One request per connection (`Connection: close`), GET
//! `/metrics` only (404 for other paths, 405 for other methods), and bounded in every way a client
//! controls: connections at once ([`Limits::connections`]; the excess is closed at once, before a
//! byte is read), request size ([`Limits::request_bytes`], then 431) and time
//! ([`Limits::timeout`] for the request to arrive, and again for the response to be taken).
//! The request is parsed with `httparse`.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{timeout, timeout_at, Instant};
use tracing::debug;

use crate::control::metrics::{Format, Metrics};

/// What a client may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are closed as soon as they are accepted.
    pub connections: usize,
    /// Largest request head (request line and headers), in bytes.
    pub request_bytes: usize,
    /// Time for the whole request to arrive, and again for the response to be sent.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { connections: 16, request_bytes: 8192, timeout: Duration::from_secs(5) }
    }
}

/// Most headers a request may carry.
const MAX_HEADERS: usize = 32;

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.connections));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, most likely: wait instead of spinning.
                debug!("metrics accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream); // over the limit: closed at once, nothing read or allocated
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            connection(stream, &metrics, limits).await;
            drop(slot);
        });
    }
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Metrics(Format),
    NotFound,
    MethodNotAllowed,
    TooLarge,
    Bad,
}

async fn connection(mut stream: TcpStream, metrics: &Metrics, limits: Limits) {
    let deadline = Instant::now() + limits.timeout;
    let parsed = match timeout_at(deadline, read_request(&mut stream, limits.request_bytes)).await {
        Ok(Some(p)) => p,
        Ok(None) | Err(_) => return, // closed early, or too slow: nothing to answer
    };
    let (status, content_type, body) = match parsed {
        Parsed::Metrics(format) => ("200 OK", format.content_type(), metrics.encode(format)),
        Parsed::NotFound => ("404 Not Found", "text/plain", "only /metrics is served here\n".into()),
        Parsed::MethodNotAllowed => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
        Parsed::TooLarge => {
            ("431 Request Header Fields Too Large", "text/plain", "request too large\n".into())
        }
        Parsed::Bad => ("400 Bad Request", "text/plain", "bad request\n".into()),
    };
    let allow = if parsed == Parsed::MethodNotAllowed { "Allow: GET\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    let sent = timeout(limits.timeout, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    if let Ok(Err(e)) = sent {
        debug!("metrics client: {e}");
    }
}

/// Reads one request head. `None` if the client closed the connection or failed first.
async fn read_request(stream: &mut TcpStream, max: usize) -> Option<Parsed> {
    let mut buf = vec![0u8; max];
    let mut len = 0;
    loop {
        let n = match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        len += n;
        match parse(&buf[..len]) {
            Some(p) => return Some(p),
            None if len == max => return Some(Parsed::TooLarge),
            None => {}
        }
    }
}

/// The answer to a request head, or `None` if it is not complete yet.
fn parse(head: &[u8]) -> Option<Parsed> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some(Parsed::TooLarge),
        Err(_) => Some(Parsed::Bad),
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
            Some(if path != "/metrics" {
                Parsed::NotFound
            } else if req.method != Some("GET") {
                Parsed::MethodNotAllowed
            } else {
                let accept = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("accept"))
                    .and_then(|h| std::str::from_utf8(h.value).ok());
                Parsed::Metrics(Format::from_accept(accept))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::control::metrics::{NetworkSample, Source};

    #[test]
    fn parses_what_it_serves_and_refuses_the_rest() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Parsed::Metrics(Format::Prometheus))
        );
        assert_eq!(
            parse(b"GET /metrics?x=1 HTTP/1.0\r\nACCEPT: application/openmetrics-text\r\n\r\n"),
            Some(Parsed::Metrics(Format::OpenMetrics))
        );
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None, "incomplete");
        assert_eq!(parse(b"GET /"), None);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Some(Parsed::NotFound));
        assert_eq!(parse(b"POST /metrics HTTP/1.1\r\n\r\n"), Some(Parsed::MethodNotAllowed));
        assert_eq!(parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), Some(Parsed::Bad), "TLS hello");
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(parse(format!("GET /metrics HTTP/1.1\r\n{many}\r\n").as_bytes()), Some(Parsed::TooLarge));
    }

    struct Empty;
    impl Source for Empty {
        fn networks(&self) -> Vec<NetworkSample> {
            Vec::new()
        }
    }

    /// A request over loopback; returns the whole response.
    fn get(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(request); // a refused connection may be closed already
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn serves_over_tcp_within_its_limits() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits { connections: 2, request_bytes: 8192, timeout: Duration::from_secs(30) };
        rt.spawn(serve(listener, Arc::new(Metrics::new(Arc::new(Empty))), limits));
        std::thread::spawn(move || rt.block_on(async { tokio::time::sleep(Duration::from_secs(60)).await }));

        let ok = get(addr, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), "{ok}");
        assert!(ok.contains("vxtap_build_info{version="), "{ok}");
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())), "{head}");
        assert!(get(addr, b"GET /x HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        let post = get(addr, b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET\r\n"), "{post}");
        let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        let r = std::net::TcpStream::connect(addr).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let _ = s.write_all(big.as_bytes()); // the server may close before it has all
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            Ok(out)
        });
        let r = r.unwrap();
        assert!(r.is_empty() || r.starts_with("HTTP/1.1 431 "), "{r}");

        // Both slots held by silent clients (accepted first: the listen queue is in order): a
        // third connection is closed at once, unanswered.
        let idle: Vec<_> = (0..2).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        let refused = get(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(refused, "", "served beyond the connection limit");
        drop(idle);
        let again = (0..100).find_map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            Some(get(addr, b"GET /metrics HTTP/1.1\r\n\r\n")).filter(|r| r.starts_with("HTTP/1.1 200"))
        });
        assert!(again.is_some(), "not served again once the slots were free");
    }
}
