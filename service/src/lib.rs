//! What every Reclaim binary does as a process, written once: logs in text or JSON, a
//! single-threaded runtime (the work is mostly waiting, and one thread keeps the
//! footprint small), and a clean stop on SIGTERM or SIGINT; the read-only HTTP endpoints
//! ([`endpoints`]), the Kubernetes client ([`client`]), Events ([`events`]), the
//! Interruption records ([`interruptions`]) and the supported releases
//! ([`server_version`]) both binaries have.

pub mod client;
pub mod endpoints;
pub mod events;
pub mod interruptions;
pub mod server_version;

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

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

/// `500ms`, `1s`, `2m`, `6h`, `30d`, or a number of seconds: every duration flag.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 1s, 2m or 6h"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit {unit:?}; use ms, s, m, h or d"
            ));
        }
    };
    // A value from an annotation can be absurd: out of range is an error, never a panic.
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(21600)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert!(parse_duration("3w").unwrap_err().contains("unknown unit"));
        assert!(
            parse_duration("99999999999999999999s")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(parse_duration("9".repeat(400).as_str()).is_err());
    }
}
