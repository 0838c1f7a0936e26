//! Case 4: nginx serving a static file under wrk, untraced and with its worker traced.
use super::*;

impl Bench {
    pub(super) fn case4(&mut self) {
        let what = "nginx static file, wrk -t1 -c16 'Connection: close' (fdtrace -p of the worker)";
        if let Some(why) = self.missing(&["nginx", "wrk"]) {
            self.rows.push(Row::skipped(4, what, why));
            return;
        }
        if let Err(e) = self.nginx_runs(what) {
            self.rows.push(Row::failed(4, what, &e));
        }
    }

    pub(super) fn nginx_runs(&mut self, what: &str) -> Result<()> {
        let dir = self.tmp("nginx");
        let www = dir.join("www");
        std::fs::create_dir_all(&www)?;
        // The worker runs as an unprivileged user: it must be able to read the files.
        use std::os::unix::fs::PermissionsExt as _;
        for d in [&self.tmp.0, &dir, &www] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::write(www.join("index.html"), index_body())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf = nginx_conf(&dir, port, None);
        std::fs::write(dir.join("nginx.conf"), &conf)?;
        self.nginx_conf = Some(conf.replace(&self.tmp.0.display().to_string(), "$TMP"));
        let mut cmd = Command::new(self.tool("nginx").context("nginx")?);
        cmd.arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off; master_process on; worker_processes 1;"]);
        self.record(&cmd, &[]);
        let mut nginx = Proc::start(&mut cmd, "nginx", false)?;
        // Ready when it accepts connections and its worker exists.
        let deadline = Instant::now() + Duration::from_secs(15);
        let worker = loop {
            if nginx.exited() {
                let _ = nginx.take_line(Duration::from_millis(200));
                bail!(
                    "nginx exited: {} {}",
                    nginx.stderr_tail(),
                    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                );
            }
            let kids = children(nginx.pid());
            if kids.len() == 1 && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break kids[0];
            }
            if Instant::now() > deadline {
                bail!("nginx did not get ready within 15 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let url = format!("http://127.0.0.1:{port}/index.html");
        let reps = self.p.reps;
        let mut base = vec![None; reps];
        let mut traced = vec![None; reps];
        let mut floor = vec![None; reps];
        let floor_tps = self.all_tracepoints("case 4");
        let mut last_err = None;
        let mut lost = 0;
        // Busy share of all CPUs during untraced and traced runs; fdtrace's share of one CPU.
        let (mut busy_u, mut busy_t, mut fdtrace_cpu) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..reps {
            // Untraced, traced, floor: the order rotates from one repetition to the next.
            let mut turns = [Turn::Untraced, Turn::Traced, Turn::Floor];
            turns.rotate_left(rep % 3);
            for turn in turns {
                let traced_turn = turn == Turn::Traced;
                if turn == Turn::Floor {
                    let Some(tps) = floor_tps.as_ref() else {
                        continue;
                    };
                    match self.wrk_under_floor(&url, tps) {
                        Ok(rps) => {
                            eprintln!(
                                "bench: case 4 rep {}/{reps}: floor    {rps:>9.0} requests/s",
                                rep + 1
                            );
                            floor[rep] = Some(rps);
                        }
                        Err(e) => {
                            eprintln!("bench: case 4 rep {}/{reps} (floor) failed: {e:#}", rep + 1);
                            self.notes
                                .push(format!("case 4: a floor run failed: {e:#}"));
                        }
                    }
                    continue;
                }
                let r = if traced_turn {
                    let json = self.tmp("nginx.json");
                    match self.attach(worker, &json, "fdtrace -p nginx worker") {
                        Ok(tracer) => {
                            let (c0, t0) = (cpu_stat(), ConsumerSnapshot::take(tracer.pid()));
                            let r = self.wrk(&url);
                            let (c1, t1) = (cpu_stat(), ConsumerSnapshot::take(tracer.pid()));
                            if let (Some(b), Ok(t0), Ok(t1)) = (busy(c0, c1), t0, t1) {
                                busy_t.push(b);
                                let secs = c1.map_or(0.0, |c| c.2) - c0.map_or(0.0, |c| c.2);
                                fdtrace_cpu.push(
                                    t1.cpu_ticks.saturating_sub(t0.cpu_ticks) as f64
                                        / clk_tck()
                                        / secs,
                                );
                            }
                            let report = self.detach(tracer, &json);
                            match (r, report) {
                                (Ok(rps), Ok(rep)) => {
                                    lost += lost_events(&rep);
                                    Ok(rps)
                                }
                                (Err(e), _) | (_, Err(e)) => Err(e),
                            }
                        }
                        Err(e) => Err(e),
                    }
                } else {
                    let c0 = cpu_stat();
                    let r = self.wrk(&url);
                    if let Some(b) = busy(c0, cpu_stat()) {
                        busy_u.push(b);
                    }
                    r
                };
                match r {
                    Ok(rps) => {
                        eprintln!(
                            "bench: case 4 rep {}/{reps}: {:<8} {rps:>9.0} requests/s",
                            rep + 1,
                            if traced_turn { "traced" } else { "untraced" }
                        );
                        if traced_turn {
                            traced[rep] = Some(rps);
                        } else {
                            base[rep] = Some(rps);
                        }
                    }
                    Err(e) => {
                        eprintln!("bench: case 4 rep {}/{reps} failed: {e:#}", rep + 1);
                        last_err = Some(e);
                    }
                }
                if !children(nginx.pid()).contains(&worker) {
                    bail!("the nginx worker {worker} is gone");
                }
            }
        }
        if let Err(e) = self.nginx_diag(worker, &url) {
            self.notes
                .push(format!("case 4: diagnostic run failed: {e:#}"));
        }
        let consumer_row = self.nginx_consumer_row(worker, &url);
        nginx.stop();
        let t: Vec<f64> = traced.iter().flatten().copied().collect();
        let b: Vec<f64> = base.iter().flatten().copied().collect();
        let ratios: Vec<f64> = traced
            .iter()
            .zip(&base)
            .filter_map(|(t, b)| Some((*t)? / (*b)?))
            .collect();
        let (Some(tm), Some(bm), Some(r)) = (median(&t), median(&b), median(&ratios)) else {
            return Err(last_err.unwrap_or_else(|| anyhow!("no successful pair of runs")));
        };
        let loss = (1.0 - r) * 100.0;
        let floor_ratios: Vec<f64> = floor
            .iter()
            .zip(&base)
            .filter_map(|(f, b)| Some((*f)? / (*b)?))
            .collect();
        let mut floor_row = None;
        if let (Some(fm), Some(fr)) = (
            median(&floor.iter().flatten().copied().collect::<Vec<_>>()),
            median(&floor_ratios),
        ) {
            let (lo, hi) = range(&floor_ratios);
            self.set(Fact::NginxFloorRps, fm);
            self.set(Fact::NginxFloorLossPct, (1.0 - fr) * 100.0);
            floor_row = Some(Row::new(
                4,
                "nginx, the floor: an empty BPF program on every tracepoint fdtrace attaches (examples/floor)",
                format!(
                    "{fm:.0} req/s vs {bm:.0} untraced (per-run ratios {lo:.3}–{hi:.3}, {} pairs of runs)",
                    floor_ratios.len()
                ),
            ).vs(format!("{fr:.3}x ({:.1}% fewer requests)", (1.0 - fr) * 100.0)));
        }
        self.set(Fact::NginxUntracedRps, bm);
        self.set(Fact::NginxTracedRps, tm);
        self.set(Fact::NginxLossPct, loss);
        self.set(Fact::NginxLostEvents, lost as f64);
        for (k, v) in [
            (Fact::NginxBusyUntracedPct, median(&busy_u)),
            (Fact::NginxBusyTracedPct, median(&busy_t)),
            (Fact::NginxFdtraceCpuPct, median(&fdtrace_cpu)),
        ] {
            if let Some(v) = v {
                self.set(k, 100.0 * v);
            }
        }
        let (lo, hi) = range(&ratios);
        self.rows.push(
            Row::new(
                4,
                what,
                format!(
                    "{tm:.0} req/s traced vs {bm:.0} untraced (per-run ratios {lo:.3}–{hi:.3}, {} pairs of {} s runs; lost events {lost})",
                    ratios.len(),
                    self.p.wrk_secs
                ),
            )
            .vs(format!("{r:.3}x ({loss:.1}% fewer requests)"))
            .target("< 5% loss", loss < 5.0),
        );
        self.rows.extend(floor_row);
        self.rows.push(consumer_row);
        Ok(())
    }

    /// fdtrace's own instructions per request it consumes: one wrk run of a second against the
    /// worker traced by fdtrace under callgrind (see `callgrind.rs`; its 256 MiB ring buffer
    /// holds a second of requests' records while it falls behind).
    fn nginx_consumer_row(&mut self, worker: u32, url: &str) -> Row {
        let what = "fdtrace's instructions per nginx request: `fdtrace -p` of the worker under \
                    callgrind, wrk -t1 -c16 -d1s 'Connection: close'";
        if let Some(m) = self.missing(&["valgrind", "callgrind_control"]) {
            return Row::skipped(4, what, m);
        }
        let run = |b: &mut Self| -> Result<(f64, f64, u64)> {
            let tracer = b.callgrind_fdtrace(worker, "nginx")?;
            tracer.count(true)?;
            let secs = std::mem::replace(&mut b.p.wrk_secs, 1);
            let r = b.wrk_run(url);
            b.p.wrk_secs = secs;
            let (total, lost) = b.callgrind_finish(tracer)?;
            let requests = r?.requests;
            Ok((total as f64 / requests, requests, lost))
        };
        match run(self) {
            Ok((per, requests, lost)) => {
                self.set(Fact::ConsumerInstructionsPerRequest, per);
                Row::new(
                    4,
                    what,
                    format!(
                        "{per:.0} instructions per request ({requests:.0} requests), counted from \
                         wrk's start until fdtrace went idle; lost events {lost}"
                    ),
                )
            }
            Err(e) => Row::failed(4, what, &e),
        }
    }

    /// One more traced wrk run with BPF statistics on: what each of fdtrace's programs costs
    /// per request.
    pub(super) fn nginx_diag(&mut self, worker: u32, url: &str) -> Result<()> {
        let stats = Sysctl::set("/proc/sys/kernel/bpf_stats_enabled", "1")?;
        let json = self.tmp("nginx-diag.json");
        let tracer = self.attach(worker, &json, "fdtrace -p nginx worker")?;
        let before = ConsumerSnapshot::take(tracer.pid());
        let r = self.wrk_run(url);
        let after = ConsumerSnapshot::take(tracer.pid());
        let names = ConsumerSnapshot::names(&after);
        let report = self.detach(tracer, &json);
        drop(stats);
        let (WrkRun { rps, requests }, before, after) = (r?, before?, after?);
        let _ = report?;
        let progs = ConsumerSnapshot::runs_between(&before, &after, &names);
        let total: f64 = progs.iter().map(|p| p.2 as f64).sum::<f64>() / requests;
        self.set(Fact::NginxDiagRps, rps);
        self.set(Fact::NginxBpfNsPerRequest, total);
        let per = |p: &(String, u64, u64)| {
            format!(
                "`{}` {:.1} runs per request, {:.0} ns per run, {:.0} ns per request",
                p.0,
                p.1 as f64 / requests,
                p.2 as f64 / p.1 as f64,
                p.2 as f64 / requests
            )
        };
        let top: Vec<String> = progs.iter().take(4).map(per).collect();
        self.texts.insert(Text::NginxTopPrograms, top.join("; "));
        let all: Vec<String> = progs
            .iter()
            .filter(|p| p.1 as f64 >= 0.05 * requests)
            .map(per)
            .collect();
        self.notes.push(format!(
            "case 4 diagnostic run (`fdtrace -p` of the worker, kernel.bpf_stats_enabled=1, one \
             {} s wrk run): {rps:.0} requests/s; fdtrace's BPF programs ran {total:.0} ns per \
             request (those that ran at least once per 20 requests): {}",
            self.p.wrk_secs,
            all.join("; ")
        ));
        Ok(())
    }

    /// Requests per second of a wrk run against `url`.
    pub(super) fn wrk(&mut self, url: &str) -> Result<f64> {
        Ok(self.wrk_run(url)?.rps)
    }

    pub(super) fn wrk_run(&mut self, url: &str) -> Result<WrkRun> {
        let mut cmd = Command::new(self.tool("wrk").context("wrk")?);
        cmd.args(["-t1", "-c16"])
            .arg(format!("-d{}s", self.p.wrk_secs))
            .args(["-H", "Connection: close"])
            .arg(url);
        self.record(&cmd, &[]);
        let out = Proc::start(&mut cmd, "wrk", false)?
            .finish(Duration::from_secs(self.p.wrk_secs as u64 + 60))?;
        if !out.status.success() {
            bail!("wrk failed ({}): {}", out.status, out.stderr.trim());
        }
        if let Some(l) = out
            .stdout
            .lines()
            .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        {
            self.notes
                .push(format!("case 4: wrk reported `{}`", l.trim()));
        }
        let rps = field(&out.stdout, "Requests/sec:")
            .with_context(|| format!("no Requests/sec in wrk's output: {}", out.stdout))?;
        // "  70934 requests in 5.00s, 85.10MB read"
        let requests = out
            .stdout
            .lines()
            .find_map(|l| {
                let (n, rest) = l.trim().split_once(' ')?;
                rest.starts_with("requests in")
                    .then(|| n.parse::<f64>().ok())?
            })
            .unwrap_or(rps * self.p.wrk_secs as f64);
        Ok(WrkRun { rps, requests })
    }
}

/// The 1 KiB file nginx serves.
pub(super) fn index_body() -> String {
    (0..1024).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

/// nginx's configuration: one server on 127.0.0.1:`port` whose files, pid, error log and
/// temporary directories are under `dir`, without an access log; `user` for the workers where
/// nginx's default user does not exist.
pub(super) fn nginx_conf(dir: &Path, port: u16, user: Option<&str>) -> String {
    let d = dir.display();
    let user = user.map(|u| format!("user {u};\n")).unwrap_or_default();
    format!(
        "{user}pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  \
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         server {{ listen 127.0.0.1:{port}; root {d}/www; }}\n}}\n"
    )
}
