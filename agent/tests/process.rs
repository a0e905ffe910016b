//! The `reclaim-agent` process itself: with its API server unreachable it keeps
//! retrying (no crash loop) and serves its endpoints; SIGTERM and SIGINT end it cleanly;
//! a server older than the supported floor ends it at start, with one clear line.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The agent, pointed at an API server and a metadata service where nothing listens.
fn agent(dir: &std::path::Path) -> (Child, String) {
    let unreachable = free_port();
    agent_of(
        dir,
        &format!("https://127.0.0.1:{unreachable}"),
        Stdio::null(),
    )
}

/// The agent, pointed at the API server `server` and a metadata service where nothing
/// listens; its log goes to `log`.
fn agent_of(dir: &std::path::Path, server: &str, log: Stdio) -> (Child, String) {
    let kubeconfig = dir.join("kubeconfig");
    let unreachable = free_port();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\n\
             users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_reclaim-agent"))
        .args([
            "--node-name",
            "n1",
            "--metadata-url",
            &format!("http://127.0.0.1:{unreachable}"),
        ])
        .args(["--metrics-addr", &metrics, "--poll-interval", "200ms"])
        .env("KUBECONFIG", &kubeconfig)
        .env("NO_COLOR", "1")
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, format!("http://{metrics}"))
}

async fn status(url: &str) -> Option<u16> {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    http.get(url).send().await.ok().map(|r| r.status().as_u16())
}

async fn wait_for_status(url: &str, wanted: u16) {
    let start = Instant::now();
    while status(url).await != Some(wanted) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{url} never answered {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `child` has exited; fails with `stuck` after `within`.
async fn exited(child: &mut Child, within: Duration, stuck: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            return exit;
        }
        assert!(start.elapsed() < within, "{stuck}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn without_an_api_server_the_agent_stays_up_unready_and_stops_cleanly_on_signals() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = std::env::temp_dir().join(format!(
            "reclaim-agent-process-{}-{signal}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (mut child, base) = agent(&dir);
        wait_for_status(&format!("{base}/healthz"), 200).await;
        assert_eq!(
            status(&format!("{base}/readyz")).await,
            Some(503),
            "not ready before a successful poll"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "the agent exited instead of retrying"
        );
        assert_eq!(
            status(&format!("{base}/healthz")).await,
            Some(200),
            "the retry loop is alive"
        );
        assert_eq!(status(&format!("{base}/metrics")).await, Some(200));
        assert_eq!(
            status(&format!("{base}/drain")).await,
            Some(404),
            "nothing but the three read-only endpoints"
        );

        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let exit = exited(
            &mut child,
            Duration::from_secs(10),
            &format!("the agent ignored signal {signal}"),
        )
        .await;
        assert!(
            exit.success(),
            "signal {signal} should end the agent cleanly, got {exit}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Answers every request with a 1.33 server's `/version`: enough for the agent's check at
/// start, which is all this test is about (everything else runs against a real server).
fn old_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = r#"{"major":"1","minor":"33+","gitVersion":"v1.33.4-eks-0a1b2c","gitCommit":"","gitTreeState":"clean","buildDate":"","goVersion":"","compiler":"gc","platform":"linux/amd64"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn on_a_server_older_than_the_floor_the_agent_exits_at_once_saying_why() {
    let dir = std::env::temp_dir().join(format!("reclaim-agent-old-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let (mut child, _) = agent_of(&dir, &old_server(), Stdio::from(log));
    let exit = exited(
        &mut child,
        Duration::from_secs(30),
        "the agent kept running on a 1.33 server",
    )
    .await;
    assert!(!exit.success(), "{exit}");
    let logged = std::fs::read_to_string(dir.join("agent.log")).unwrap();
    assert!(
        logged.contains("the Kubernetes API server is 1.33 (v1.33.4-eks-0a1b2c), older than the oldest supported release 1.34"),
        "{logged}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
