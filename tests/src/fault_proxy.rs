//! A TCP proxy between a binary and the API server that fails the way networks do, so
//! tests inject API faults at the boundary, never inside the product:
//!
//! - [`Mode::Refuse`]: every connection, new and open, is reset (a server restarting, a
//!   load balancer with no backend);
//! - [`Mode::BlackHole`]: new connections are accepted and never answered, and open ones
//!   stop forwarding and are left hanging forever, even after the proxy passes traffic
//!   again (what a load-balancer failover leaves behind);
//! - [`Mode::Pass`]: traffic flows (on new connections).
//!
//! TLS goes through untouched: the API server's certificate is valid for 127.0.0.1, the
//! proxy's address too.

use std::net::SocketAddr;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Refuse,
    BlackHole,
}

pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    tasks: JoinSet<()>,
}

impl FaultProxy {
    /// Starts passing traffic to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, watched) = watch::channel(Mode::Pass);
        let upstream = upstream.to_owned();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(serve(client, upstream.clone(), watched.clone()));
            }
        });
        Ok(FaultProxy { addr, mode, tasks })
    }

    /// The server URL to give the client instead of the API server's.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        let _ = self.mode.send(mode);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn serve(client: TcpStream, upstream: String, mut mode: watch::Receiver<Mode>) {
    let now = *mode.borrow_and_update();
    match now {
        Mode::Refuse => return reset(client),
        Mode::BlackHole => return hold_forever(client).await,
        Mode::Pass => {}
    }
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return reset(client);
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = client_read.read(&mut up) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if server_write.write_all(&up[..n]).await.is_err() { return },
            },
            read = server_read.read(&mut down) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if client_write.write_all(&down[..n]).await.is_err() { return },
            },
            changed = mode.changed() => {
                if changed.is_err() { return }
                let now = *mode.borrow_and_update();
                match now {
                    Mode::Pass => {}
                    // Dropping the halves closes both sides.
                    Mode::Refuse => return,
                    Mode::BlackHole => {
                        let _held = (client_read, client_write, server_read, server_write);
                        return std::future::pending().await;
                    }
                }
            }
        }
    }
}

/// Closes with a reset, as a refused or dropped connection looks to the client.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn hold_forever(stream: TcpStream) {
    let _held = stream;
    std::future::pending::<()>().await
}
