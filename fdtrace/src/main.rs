use clap::Parser as _;
use fdtrace::cli::Cli;

fn main() {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FDTRACE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    let result = cli
        .options()
        .map_err(anyhow::Error::msg)
        .and_then(fdtrace::session::run);
    if let Err(e) = result {
        // One line, no backtrace: the chain of causes joined with ': '.
        eprintln!("fdtrace: {e:#}");
        std::process::exit(1);
    }
}
