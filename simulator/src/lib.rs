//! A cloud instance metadata simulator (AWS IMDS, Azure Scheduled Events, GCP metadata), faithful to the providers' documented formats
//! (`docs/metadata-protocols.md`), error pages included, so the agent is tested against what it
//! will really read. Tests drive it in-process through [`Simulator`]; users and the
//! demo run `reclaim-metadata-sim` and drive it through its `/_sim/` control API.

pub mod aws;
pub mod azure;
mod control;
mod faults;
pub mod gcp;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use tokio::net::TcpListener;

pub use aws::{AwsMetadata, Imdsv2};
pub use faults::Fault;

/// Everything the simulator serves, behind one lock.
#[derive(Debug, Default)]
pub struct SimState {
    pub aws: AwsMetadata,
    pub azure: azure::AzureMetadata,
    pub gcp: gcp::GcpMetadata,
    pub faults: faults::Faults,
    /// When an answer first carried a notice (AWS spot instance-action, an Azure event,
    /// GCP `TRUE`/`TERMINATE_ON_HOST_MAINTENANCE`) since it was last reset: the moment the
    /// agent could first have seen it, what notice-to-taint is measured from.
    pub notice_first_served: Option<jiff::Timestamp>,
}

impl SimState {
    fn notice_served(&mut self) {
        self.notice_first_served
            .get_or_insert_with(jiff::Timestamp::now);
    }
}

/// The clouds a simulator can answer as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    Aws,
    Azure,
    Gcp,
}

/// A running simulator.
pub struct Simulator {
    addr: SocketAddr,
    state: Arc<Mutex<SimState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Simulator {
    /// Serves every cloud's metadata on `listen` (port 0 picks a free one) until dropped.
    pub async fn start(listen: SocketAddr, state: SimState) -> std::io::Result<Simulator> {
        Simulator::start_serving(listen, state, &[Cloud::Aws, Cloud::Azure, Cloud::Gcp]).await
    }

    /// Serves only `clouds` (the others' paths answer 404), as a real instance does.
    pub async fn start_serving(
        listen: SocketAddr,
        state: SimState,
        clouds: &[Cloud],
    ) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(state));
        let app = router(state.clone(), clouds);
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the simulator's server stopped");
        });
        Ok(Simulator {
            addr,
            state,
            server,
        })
    }

    /// Base URL to give the agent as `--metadata-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Direct access to what is served, for tests.
    pub fn state(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().expect("simulator state lock poisoned")
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub(crate) type Shared = Arc<Mutex<SimState>>;

fn router(state: Shared, clouds: &[Cloud]) -> Router {
    let mut app = control::routes();
    for cloud in clouds {
        app = app.merge(match cloud {
            Cloud::Aws => aws::routes(),
            Cloud::Azure => azure::routes(),
            Cloud::Gcp => gcp::routes(),
        });
    }
    app.with_state(state)
}
