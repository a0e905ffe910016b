//! `reclaim-classifier` entry point.
//!
//! The classification rules arrive with issue 5; until then the binary refuses to
//! run rather than pretend to classify failures.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "reclaim-classifier {}: failure classification is not implemented yet; it will write {} (see README, feature table)",
        env!("CARGO_PKG_VERSION"),
        reclaim_model::keys::CAUSE_ANNOTATION,
    );
    ExitCode::from(2)
}
