//! Case 7: how long a Prometheus scrape of `--metrics` takes while fdtrace traces the open/close
//! loop, alone and with 200 clients connected that never finish their request (a port scanner,
//! a stuck scraper). The endpoint runs apart from the ring-buffer consumer, so neither the
//! scrape nor the tracing may wait on those clients.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use super::{Bench, Fact, Proc, Row, lost_events, median, range};

/// Clients that connect and send half a request head.
pub(super) const IDLE_CLIENTS: usize = 200;
/// Time between two scrapes.
const EVERY: Duration = Duration::from_millis(50);
/// A scrape not answered within this is counted as unanswered.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one traced loop with scrapes measured.
struct ScrapeRun {
    latencies_ms: Vec<f64>,
    unanswered: usize,
    lost: u64,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One `GET /metrics`; the time to the whole answer, or None when it is not a 200 in time.
fn scrape(port: u16) -> Option<Duration> {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(SCRAPE_TIMEOUT)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer
        .starts_with("HTTP/1.1 200")
        .then(|| t.elapsed())
        .filter(|d| *d < SCRAPE_TIMEOUT)
}

/// Keeps `n` half-finished requests open until `stop`: the endpoint closes each after its
/// header timeout, and a closed one is opened again (as a scanner would).
fn idle_clients(port: u16, n: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let open = || -> Option<TcpStream> {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.write_all(b"GET /metrics HTTP/1.1\r\n").ok()?;
            s.set_nonblocking(true).ok()?;
            Some(s)
        };
        let mut clients: Vec<Option<TcpStream>> = (0..n).map(|_| open()).collect();
        while !stop.load(Ordering::Relaxed) {
            for c in clients.iter_mut() {
                let mut buf = [0u8; 512];
                let closed = match c {
                    // Still waiting on us: nothing to read yet. Anything else (an answer, end
                    // of file, a reset) means the endpoint is done with this one.
                    Some(s) => !matches!(s.read(&mut buf),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                    None => true,
                };
                if closed {
                    *c = open();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

impl Bench {
    pub(super) fn case7(&mut self) {
        let pairs = self.p.sustained_pairs;
        for idle in [0, IDLE_CLIENTS] {
            let what = if idle == 0 {
                format!(
                    "metrics scrape while fdtrace traces the open/close loop ({pairs} pairs), \
                     no other client"
                )
            } else {
                format!(
                    "metrics scrape while fdtrace traces the open/close loop ({pairs} pairs), \
                     {idle} clients holding unfinished requests"
                )
            };
            match self.scrape_run(pairs, idle) {
                Ok(r) => {
                    let Some(med) = median(&r.latencies_ms) else {
                        self.rows.push(Row::failed(
                            7,
                            what,
                            &anyhow::anyhow!("no scrape answered"),
                        ));
                        continue;
                    };
                    let (lo, hi) = range(&r.latencies_ms);
                    self.set(Fact::ScrapeMedianMs { idle }, med);
                    self.set(Fact::ScrapeMaxMs { idle }, hi);
                    self.set(Fact::ScrapeLostEvents { idle }, r.lost as f64);
                    let row = Row::new(
                        7,
                        what,
                        format!(
                            "median {med:.2} ms (range {lo:.2}–{hi:.2}) over {} scrapes every {} ms; \
                             {} unanswered within {} s; lost events {}",
                            r.latencies_ms.len(),
                            EVERY.as_millis(),
                            r.unanswered,
                            SCRAPE_TIMEOUT.as_secs(),
                            r.lost
                        ),
                    );
                    self.rows.push(if idle == 0 {
                        row
                    } else {
                        row.target(
                            "every scrape < 100 ms, 0 lost",
                            hi < 100.0 && r.unanswered == 0 && r.lost == 0,
                        )
                    });
                }
                Err(e) => self.rows.push(Row::failed(7, what, &e)),
            }
        }
    }

    /// `fdtrace -p` of `openclose -w` with `--metrics`; `idle` half-finished requests held open
    /// while the loop runs, and a scrape every 50 ms from the loop's start to its end.
    fn scrape_run(&mut self, pairs: u64, idle: usize) -> Result<ScrapeRun> {
        let mut cmd = std::process::Command::new(&self.openclose);
        cmd.arg("-w").arg(pairs.to_string());
        self.record(&cmd, &[]);
        let mut target = Proc::start(&mut cmd, "openclose -w", true)?;
        target.wait_line("ready", Duration::from_secs(10))?;
        let port = free_port()?;
        let json = self.tmp("scrape.json");
        let tracer = self.attach_with(
            target.pid(),
            &json,
            "fdtrace --metrics -p openclose",
            &["--metrics".to_string(), format!("127.0.0.1:{port}")],
            &[(port.to_string(), "$PORT")],
        )?;
        if scrape(port).is_none() {
            bail!("the metrics endpoint did not answer once fdtrace traced");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (idle > 0).then(|| idle_clients(port, idle, stop.clone()));
        if idle > 0 {
            // Let every client connect before the loop starts.
            std::thread::sleep(Duration::from_millis(500));
        }
        target.send_line();
        let mut latencies_ms = Vec::new();
        let mut unanswered = 0;
        let deadline = Instant::now() + Self::loop_timeout(pairs);
        let mut done = false;
        while !done && Instant::now() < deadline {
            match scrape(port) {
                Some(d) => latencies_ms.push(d.as_secs_f64() * 1e3),
                None => unanswered += 1,
            }
            // Waits EVERY for the loop's line, which also paces the scrapes.
            while let Some((is_err, line)) = target.take_line(EVERY) {
                if !is_err && line.starts_with("ns_per_pair") {
                    done = true;
                    break;
                }
            }
            if target.exited() {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        if let Some(c) = clients {
            let _ = c.join();
        }
        target.send_line();
        let _ = target.finish(Duration::from_secs(10));
        if !done {
            bail!("the loop did not finish");
        }
        let report = self.detach(tracer, &json)?;
        Ok(ScrapeRun {
            latencies_ms,
            unanswered,
            lost: lost_events(&report),
        })
    }
}
