//! `reclaim-metadata-sim`: serve a simulated instance metadata service, to rehearse an
//! interruption with a real `reclaim-agent` (`--metadata-url http://<listen>`).
//!
//! Drive it with its control API, e.g. a spot notice two minutes ahead:
//! `curl -X POST localhost:1338/_sim/aws/spot -d '{"lead_seconds":120}' -H 'content-type: application/json'`

use std::net::SocketAddr;

use clap::Parser;
use jiff::{SignedDuration, Timestamp};
use reclaim_simulator::{Imdsv2, SimState, Simulator};

#[derive(Parser)]
#[command(name = "reclaim-metadata-sim", version)]
struct Args {
    /// Where to listen; keep it on loopback unless you know who can reach it.
    #[arg(long, default_value = "127.0.0.1:1338")]
    listen: SocketAddr,
    /// Accept GETs without a session token (IMDSv2 optional).
    #[arg(long)]
    imdsv1_allowed: bool,
    /// Announce a spot interruption this many seconds after start.
    #[arg(long)]
    spot_after_seconds: Option<i64>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut state = SimState::default();
    state.aws.instance_id = "i-0123456789abcdef0".into();
    if args.imdsv1_allowed {
        state.aws.imdsv2 = Imdsv2::Optional;
    }
    if let Some(after) = args.spot_after_seconds {
        let visible = Timestamp::now() + SignedDuration::from_secs(after);
        state
            .aws
            .schedule_spot("terminate", visible, SignedDuration::from_secs(120));
    }
    let sim = Simulator::start(args.listen, state).await?;
    println!("serving simulated instance metadata at {}", sim.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
