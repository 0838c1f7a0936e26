use clap::Parser as _;
use fdtrace::cli::{Cli, Cmd};

fn main() {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // Diagnostics go through a thread of their own with a bounded, lossy queue: a stderr that
    // nobody reads never stalls the tracing loop. 4096 lines (128 KiB of queue, written when the
    // queue is made; the default 128,000 held 4 MiB for the whole session).
    let (stderr, flush) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(4096)
        .lossy(true)
        .finish(std::io::stderr());
    // The agent's own lines (its triggers and their outcomes) are always shown, with the time,
    // its name, and as JSON objects with --log-json.
    let agent = match &cli.cmd {
        Some(Cmd::Agent(a)) => Some(a.log_json),
        _ => None,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FDTRACE_LOG").unwrap_or_else(|_| {
        let agent_lines = format!("{level},{}=info", fdtrace::agent::LOG_TARGET);
        tracing_subscriber::EnvFilter::new(if agent.is_some() { &agent_lines } else { level })
    });
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(stderr);
    match agent {
        Some(true) => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        Some(false) => fmt.init(),
        None => fmt.with_target(false).without_time().init(),
    }
    // Tracing passes a launched command's exit status on; everything else exits 0 when it
    // succeeds.
    let mut code = 0;
    let result = match &cli.cmd {
        None => cli
            .trace
            .options()
            .map(|mut o| {
                o.all |= cli.verbose > 0;
                o
            })
            .map_err(anyhow::Error::msg)
            .and_then(fdtrace::run::run)
            .map(|c| code = c),
        Some(Cmd::Record(t)) => t
            .record_options()
            .map_err(anyhow::Error::msg)
            .and_then(fdtrace::run::run)
            .map(|c| code = c),
        Some(Cmd::Report(r)) => fdtrace::commands::report(r, cli.verbose > 0),
        Some(Cmd::Export(e)) => fdtrace::commands::export(e),
        Some(Cmd::Diff(d)) => fdtrace::commands::diff(d),
        Some(Cmd::Top(t)) => fdtrace::top::run(t.count, t.interval, t.once),
        Some(Cmd::Agent(a)) => fdtrace::agent::run(&a.into()),
        Some(Cmd::Completions { shell }) => {
            use clap::CommandFactory as _;
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "fdtrace",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Some(Cmd::Hooks { list: true, .. }) => fdtrace::hooks::print_tracepoints(),
        Some(Cmd::Hooks { hooks, .. }) => fdtrace::hook_report::print(*hooks),
        Some(Cmd::Manpage { dir }) => fdtrace::manpages::run(dir.as_deref()),
    };
    // Diagnostics still queued are written before the error line and the exit.
    drop(flush);
    if let Err(e) = result {
        // One line, no backtrace: the chain of causes joined with ': '. A damaged recording
        // exits with 2, every other failure with 1.
        fdtrace::output::say(&format!("fdtrace: {e:#}"));
        let damaged = e.downcast_ref::<fdtrace::replay::Damaged>().is_some();
        std::process::exit(if damaged { 2 } else { 1 });
    }
    std::process::exit(code);
}
