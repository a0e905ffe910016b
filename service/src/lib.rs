//! What every Reclaim binary does as a process, written once: logs in text or JSON, a
//! single-threaded runtime (the work is mostly waiting, and one thread keeps the
//! footprint small), and a clean stop on SIGTERM or SIGINT; the read-only HTTP endpoints
//! ([`endpoints`]), the Kubernetes client ([`client`]) and Events ([`events`]) both
//! binaries have.

pub mod client;
pub mod endpoints;
pub mod events;

use std::future::Future;
use std::process::ExitCode;

use clap::ValueEnum;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stdout in `format`, at `info` unless `RUST_LOG` says otherwise.
pub fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    match format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
}

/// Runs `main` on a single-threaded runtime. The receiver it gets turns true on
/// SIGTERM or SIGINT; `main` should then wind down and return. An error is logged and
/// makes the exit status non-zero.
pub fn run<F, Fut>(name: &str, main: F) -> ExitCode
where
    F: FnOnce(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (stop, shutdown) = watch::channel(false);
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("{name}: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            tracing::info!(signal, "shutting down");
            let _ = stop.send(true);
        }
    });
    match runtime.block_on(main(shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
