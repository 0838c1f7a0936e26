//! The `--metrics` endpoint: HTTP/1.1 (hyper) on a thread and runtime of its own, serving the
//! exposition text the tracing loop last published. A client never touches the tracing loop: a
//! scrape reads a snapshot, and a client that connects and says nothing, sends megabytes of
//! headers or garbage only ever holds one of a bounded number of connection slots, for a bounded
//! time.
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode, body::Bytes, header, server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};

/// Connections served at once; a connection beyond them is closed at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Time a client has to send its whole request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a connection may last in all, however slowly it reads the answer.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head read (hyper's minimum buffer); larger heads get 431 and are closed.
pub const MAX_HEAD_BYTES: usize = 8192 + 4096;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exposition text and its content type, shared between the loop that replaces it and the
/// server.
#[derive(Clone)]
pub struct Published(Arc<Mutex<(Bytes, &'static str)>>);

impl Default for Published {
    fn default() -> Self {
        Published(Arc::new(Mutex::new((Bytes::new(), CONTENT_TYPE))))
    }
}

impl Published {
    /// Prometheus's text format (0.0.4).
    pub fn set(&self, body: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = (Bytes::from(body), CONTENT_TYPE);
    }

    /// OpenMetrics text (what the `prometheus-client` crate writes).
    pub fn set_openmetrics(&self, body: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = (Bytes::from(body), OPENMETRICS_TYPE);
    }

    fn get(&self) -> (Bytes, &'static str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Bind the endpoint (before tracing starts, so a bad address fails first). An address other
/// than loopback gets a note that the endpoint has no authentication.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let l =
        std::net::TcpListener::bind(addr).with_context(|| format!("serving metrics on {addr}"))?;
    l.set_nonblocking(true)?;
    if !addr.ip().is_loopback() {
        crate::output::say(&format!(
            "fdtrace: note: the metrics endpoint http://{addr}/metrics has no authentication: \
             anyone who can reach that address can read it"
        ));
    }
    Ok(l)
}

/// Serve `published` on `listener` from a thread of its own until the process exits.
pub fn start(listener: std::net::TcpListener, published: Published) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("fdtrace-metrics".into())
        .spawn(move || {
            rt.block_on(async move {
                if let Err(e) = serve(listener, published).await {
                    tracing::warn!("metrics endpoint stopped: {e:#}");
                }
            })
        })?;
    Ok(())
}

async fn serve(listener: std::net::TcpListener, published: Published) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors (EMFILE) or a connection reset before accept: wait a
                // little rather than spin.
                tracing::debug!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let published = published.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| answer(req, published.clone()));
            let conn = http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(MAX_HEAD_BYTES)
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        });
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    published: Published,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let (text, text_type) = published.get();
    let mut content_type = CONTENT_TYPE;
    let (status, body) = match (req.uri().path(), get) {
        ("/metrics", true) => {
            content_type = text_type;
            (StatusCode::OK, text)
        }
        ("/", true) => (
            StatusCode::OK,
            Bytes::from_static(b"fdtrace: Prometheus metrics are at /metrics\n"),
        ),
        ("/metrics" | "/", false) => (
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::from_static(b"only GET and HEAD\n"),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"not found; metrics are at /metrics\n"),
        ),
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type);
    if status == StatusCode::METHOD_NOT_ALLOWED {
        resp = resp.header(header::ALLOW, "GET, HEAD");
    }
    let body = if *req.method() == Method::HEAD {
        resp = resp.header(header::CONTENT_LENGTH, body.len());
        Bytes::new()
    } else {
        body
    };
    Ok(resp.body(Full::new(body)).expect("a valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    fn server(body: &str) -> SocketAddr {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let p = Published::default();
        p.set(body.into());
        start(l, p).unwrap();
        addr
    }

    fn ask(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(request);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn only_get_of_metrics_and_root_are_answered() {
        let addr = server("fdtrace_lost_events_total 0\n");
        let ok = ask(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("version=0.0.4"), "{ok}");
        assert!(ok.ends_with("fdtrace_lost_events_total 0\n"), "{ok}");
        let root = ask(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(root.starts_with("HTTP/1.1 200") && root.contains("/metrics"));
        let head = ask(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(!head.contains("fdtrace_lost"), "{head}");
        let post = ask(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        assert!(post.to_ascii_lowercase().contains("allow: get, head"));
        let other = ask(addr, b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        let garbage = ask(addr, b"\x00\x01\xffnot http at all\r\n\r\n");
        assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.resize(200_000, b'a');
        let big = ask(addr, &huge);
        assert!(big.starts_with("HTTP/1.1 431"), "{big}");
    }
}
