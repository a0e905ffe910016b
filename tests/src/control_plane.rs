//! A real, current Kubernetes control plane on loopback, for tests and the demo: etcd,
//! kube-apiserver with the defaults a real cluster has (RBAC, API Priority and Fairness,
//! admission policies), and kube-controller-manager, built by `scripts/control-plane`.
//!
//! One per process ([`ControlPlane::shared`]): starting etcd and the API server costs
//! seconds, and tests isolate themselves with their own namespaces and node names.
//!
//! Nothing may outlive the process, even when a test panics or the run is interrupted:
//! - every child is spawned with `PR_SET_PDEATHSIG = SIGKILL` from a thread that never
//!   exits, so the kernel kills the children when the process dies, however it dies;
//! - an `atexit` handler stops them on a normal exit (the test harness exits through
//!   `exit()` after panicking tests too) and removes the data directory;
//! - a data directory left by a process killed with SIGKILL is swept by the next start.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use reclaim_service::client::{ReadTimeout, client_from_config};

const DIR_PREFIX: &str = "reclaim-cp-";
const PROVISION_HINT: &str =
    "run `scripts/control-plane provision` (builds and caches them once, about 6 minutes)";

/// A running control plane and how to reach it as cluster admin.
#[derive(Debug)]
pub struct ControlPlane {
    /// `https://127.0.0.1:<port>`
    pub server: String,
    /// A kubeconfig for the admin user (group `system:masters`), usable by kubectl.
    pub kubeconfig: PathBuf,
    /// The CA certificate (PEM) that signs the API server's serving certificate.
    pub ca_file: PathBuf,
    /// Bearer token of the admin user.
    pub admin_token: String,
    /// The version the API server reports (`/version`'s gitVersion, `v1.37.2`).
    pub version: String,
    /// Where etcd data, certificates and the components' logs live; `audit.log` holds the
    /// requests of the ServiceAccounts in `reclaim-system` (JSON lines, level Metadata).
    pub dir: PathBuf,
}

struct Running {
    children: Vec<Child>,
    dir: PathBuf,
}

static SHARED: OnceLock<std::result::Result<ControlPlane, String>> = OnceLock::new();
static RUNNING: Mutex<Option<Running>> = Mutex::new(None);

impl ControlPlane {
    /// The process's control plane, started on first use. Panics with the command that
    /// provisions the binaries when they are missing: tests never skip silently.
    pub fn shared() -> &'static ControlPlane {
        match SHARED.get_or_init(|| start_on_keeper_thread().map_err(|e| format!("{e:#}"))) {
            Ok(cp) => cp,
            Err(e) => panic!("local control plane unavailable: {e}"),
        }
    }

    /// A client authenticated as cluster admin, built as the classifier builds its own
    /// (no automatic 429 retries; timeouts that let watches idle). Each async runtime
    /// needs its own client.
    pub async fn admin_client(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(client_from_config(config, ReadTimeout::Watches)?)
    }

    /// A cluster-admin client with the binaries' timeouts (`read`: the agent's or the
    /// classifier's), talking to `server` when given (a fault proxy in front of the API
    /// server).
    pub async fn client_via(&self, server: Option<&str>, read: ReadTimeout) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        if let Some(server) = server {
            config.cluster_url = server.parse()?;
        }
        Ok(client_from_config(config, read)?)
    }

    /// A client authenticated as the ServiceAccount `namespace/name`, with a token from the
    /// TokenRequest API: what a pod running as that ServiceAccount gets.
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
        read: ReadTimeout,
    ) -> Result<Client> {
        let kubeconfig = self.service_account_kubeconfig(namespace, name).await?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(client_from_config(config, read)?)
    }

    /// The admin kubeconfig with its user replaced by ServiceAccount `namespace/name`
    /// (a token from the TokenRequest API), written to `<dir>/<file>` for a process.
    pub async fn service_account_kubeconfig_file(
        &self,
        namespace: &str,
        name: &str,
        file: &str,
    ) -> Result<PathBuf> {
        let kubeconfig = self.service_account_kubeconfig(namespace, name).await?;
        let path = self.dir.join(file);
        fs::write(&path, serde_json::to_string(&kubeconfig)?)?;
        Ok(path)
    }

    /// A client with a token of ServiceAccount `namespace/name` bound to `pod`, as the
    /// kubelet mounts it: the token names the pod's node
    /// (`authentication.kubernetes.io/node-name`).
    pub async fn pod_bound_client(
        &self,
        namespace: &str,
        name: &str,
        pod: &k8s_openapi::api::core::v1::Pod,
        read: ReadTimeout,
    ) -> Result<Client> {
        let token = self.token_request(namespace, name, Some(pod)).await?;
        let config = kube::Config::from_custom_kubeconfig(
            self.kubeconfig_with(token)?,
            &KubeConfigOptions::default(),
        )
        .await?;
        Ok(client_from_config(config, read)?)
    }

    async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<Kubeconfig> {
        let token = self.service_account_token(namespace, name).await?;
        self.kubeconfig_with(token)
    }

    /// The admin kubeconfig with its user replaced by `token`.
    fn kubeconfig_with(&self, token: String) -> Result<Kubeconfig> {
        let mut kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        for user in &mut kubeconfig.auth_infos {
            user.auth_info = Some(AuthInfo {
                token: Some(token.clone().into()),
                ..AuthInfo::default()
            });
        }
        Ok(kubeconfig)
    }

    /// A token of ServiceAccount `namespace/name` from the TokenRequest API (an hour).
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> Result<String> {
        self.token_request(namespace, name, None).await
    }

    /// A token of ServiceAccount `namespace/name` from the TokenRequest API, bound to
    /// `pod` when given.
    async fn token_request(
        &self,
        namespace: &str,
        name: &str,
        pod: Option<&k8s_openapi::api::core::v1::Pod>,
    ) -> Result<String> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.admin_client().await?, namespace);
        let mut request = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        });
        if let Some(pod) = pod {
            request["spec"]["boundObjectRef"] = serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "name": pod.metadata.name, "uid": pod.metadata.uid,
            });
        }
        let answer: serde_json::Value = accounts
            .create_subresource("token", name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("requesting a token for ServiceAccount {namespace}/{name}"))?;
        Ok(answer["status"]["token"]
            .as_str()
            .context("the TokenRequest answer holds no token")?
            .to_owned())
    }

    /// Runs `kubectl <args>` as a user does, with `KUBECONFIG` naming the admin's and
    /// `plugins` first on `PATH` (kubectl finds `kubectl-<name>` plugins there and hands
    /// them the environment); its exit code, stdout and stderr.
    pub fn kubectl_with_plugins(
        &self,
        plugins: &Path,
        args: &[&str],
    ) -> Result<(i32, String, String)> {
        let path = std::env::join_paths(std::iter::once(plugins.to_path_buf()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))?;
        let output = std::process::Command::new(binaries_dir()?.join("kubectl"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", path)
            .output()
            .context("running kubectl")?;
        Ok((
            output.status.code().unwrap_or(-1),
            String::from_utf8(output.stdout)?,
            String::from_utf8(output.stderr)?,
        ))
    }

    /// Runs kubectl as cluster admin against this control plane; returns its stdout, or
    /// fails with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let output = std::process::Command::new(binaries_dir()?.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .context("running kubectl (run `scripts/control-plane provision`)")?;
        if !output.status.success() {
            anyhow::bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// Installs the CustomResourceDefinitions of `tests/fixtures/crds/<file>` and waits
    /// until the server serves them.
    pub fn install_crds(&self, file: &str) -> Result<()> {
        self.install_crd_file(
            &(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/crds/").to_owned() + file),
        )
    }

    /// Installs the shipped Interruption CRD (`manifests/base/crd/interruptions.yaml`),
    /// once per process.
    pub fn install_interruption_crd(&self) -> Result<()> {
        static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        INSTALLED
            .get_or_init(|| {
                self.install_crd_file(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../manifests/base/crd/interruptions.yaml"
                ))
                .map_err(|e| format!("{e:#}"))
            })
            .clone()
            .map_err(anyhow::Error::msg)
    }

    fn install_crd_file(&self, path: &str) -> Result<()> {
        self.kubectl(&["apply", "-f", path])?;
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            path,
        ])?;
        Ok(())
    }

    /// What `reclaim-system`'s ServiceAccounts asked of the API server between `from` and
    /// `to` (completed requests), counted by verb, of the requests whose URI names
    /// `naming` (a node's name: its Node, the pods listed on it, its records).
    pub fn audited(
        &self,
        naming: &str,
        from: jiff::Timestamp,
        to: jiff::Timestamp,
    ) -> Result<std::collections::BTreeMap<String, usize>> {
        let log = fs::read_to_string(self.dir.join("audit.log"))?;
        let mut verbs = std::collections::BTreeMap::new();
        for event in log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        {
            let at: Option<jiff::Timestamp> = event["stageTimestamp"]
                .as_str()
                .and_then(|t| t.parse().ok());
            if event["stage"] == "ResponseComplete"
                && at.is_some_and(|at| at >= from && at < to)
                && event["requestURI"]
                    .as_str()
                    .is_some_and(|uri| uri.contains(naming))
            {
                *verbs
                    .entry(event["verb"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
            }
        }
        Ok(verbs)
    }

    /// Process ids of etcd, kube-apiserver and kube-controller-manager, in start order.
    pub fn component_pids(&self) -> Vec<u32> {
        RUNNING
            .lock()
            .unwrap()
            .as_ref()
            .map(|r| r.children.iter().map(Child::id).collect())
            .unwrap_or_default()
    }
}

/// Where `scripts/control-plane` caches the binaries (the script is the one authority).
pub fn binaries_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("RECLAIM_CONTROL_PLANE_BIN") {
        return Ok(dir.into());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/control-plane");
    let out = Command::new(&script)
        .arg("bin-dir")
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} bin-dir failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn start_on_keeper_thread() -> Result<ControlPlane> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("control-plane-keeper".into())
        .spawn(move || {
            // The children's death signal fires when the thread that spawned them ends,
            // so this thread spawns them and then never ends.
            let _ = tx.send(start());
            loop {
                std::thread::park();
            }
        })?;
    rx.recv().context("control plane keeper thread died")?
}

fn start() -> Result<ControlPlane> {
    let bin = binaries_dir()?;
    for name in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kubectl",
    ] {
        if !bin.join(name).is_file() {
            bail!("{} is missing: {PROVISION_HINT}", bin.join(name).display());
        }
    }
    sweep_stale_dirs();
    let dir = tempdir()?;
    // SAFETY: registering a plain extern "C" function without captured state.
    unsafe { libc::atexit(stop_at_exit) };
    *RUNNING.lock().unwrap() = Some(Running {
        children: Vec::new(),
        dir: dir.clone(),
    });

    let [etcd_port, peer_port, api_port] = free_ports()?;
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    spawn(
        &bin.join("etcd"),
        &dir,
        "etcd",
        &[
            "--name=reclaim",
            &format!("--data-dir={}", dir.join("etcd").display()),
            &format!("--listen-client-urls={etcd_url}"),
            &format!("--advertise-client-urls={etcd_url}"),
            &format!("--listen-peer-urls={peer_url}"),
            &format!("--initial-advertise-peer-urls={peer_url}"),
            &format!("--initial-cluster=reclaim={peer_url}"),
            "--unsafe-no-fsync",
        ],
    )?;

    let admin_token = random_hex(16)?;
    fs::write(
        dir.join("tokens.csv"),
        format!("{admin_token},admin,admin,system:masters\n"),
    )?;
    // What Reclaim's ServiceAccounts ask of the API server, and nothing else, is audited:
    // the RBAC tests compare it with what the manifests grant.
    fs::write(
        dir.join("audit-policy.yaml"),
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
         - level: Metadata\n  userGroups: [\"system:serviceaccounts:reclaim-system\"]\n\
         - level: None\n",
    )?;
    let sa_key = dir.join("service-account.key");
    let status = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&sa_key)
        .arg("2048")
        .stderr(Stdio::null())
        .status()
        .context("running openssl genrsa")?;
    if !status.success() {
        bail!("openssl genrsa failed");
    }
    let cert_dir = dir.join("pki");
    let d = |p: &Path| p.display().to_string();
    spawn(
        &bin.join("kube-apiserver"),
        &dir,
        "kube-apiserver",
        &[
            &format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            &format!("--secure-port={api_port}"),
            &format!("--cert-dir={}", d(&cert_dir)),
            &format!("--token-auth-file={}", d(&dir.join("tokens.csv"))),
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            &format!("--service-account-key-file={}", d(&sa_key)),
            &format!("--service-account-signing-key-file={}", d(&sa_key)),
            "--service-cluster-ip-range=10.0.0.0/24",
            "--endpoint-reconciler-type=none",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            "--profiling=false",
            &format!("--audit-policy-file={}", d(&dir.join("audit-policy.yaml"))),
            &format!("--audit-log-path={}", d(&dir.join("audit.log"))),
        ],
    )?;

    let ca_file = dir.join("ca.crt");
    let server = format!("https://127.0.0.1:{api_port}");
    wait_for(
        Duration::from_secs(60),
        "the API server's certificate",
        || {
            let pem = fs::read_to_string(cert_dir.join("apiserver.crt")).unwrap_or_default();
            // The generated file holds the serving certificate, then the CA that signed it.
            let blocks: Vec<&str> = pem.split_inclusive("-----END CERTIFICATE-----\n").collect();
            match blocks.get(1) {
                Some(ca) => fs::write(&ca_file, ca).map(|_| true).map_err(Into::into),
                None => Ok(false),
            }
        },
    )?;
    let kubeconfig = dir.join("admin.kubeconfig");
    fs::write(
        &kubeconfig,
        kubeconfig_text(&server, &ca_file, "admin", &admin_token),
    )?;
    let mut cp = ControlPlane {
        server,
        kubeconfig,
        ca_file,
        admin_token,
        version: String::new(),
        dir: dir.clone(),
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = runtime.block_on(cp.admin_client())?;
    wait_for(Duration::from_secs(90), "kube-apiserver /readyz", || {
        let ready =
            runtime.block_on(client.request_text(http::Request::get("/readyz").body(Vec::new())?));
        Ok(matches!(ready.as_deref(), Ok("ok")))
    })?;
    cp.version = runtime.block_on(client.apiserver_version())?.git_version;

    spawn(
        &bin.join("kube-controller-manager"),
        &dir,
        "kube-controller-manager",
        &[
            &format!("--kubeconfig={}", d(&cp.kubeconfig)),
            // Never the node lifecycle controller: with no kubelet it would taint nodes
            // and evict pods by itself. The pod garbage collector deletes the pods of a
            // Node that is gone, with the DisruptionTarget condition, as in a cluster.
            "--controllers=disruption-controller,namespace-controller,garbage-collector-controller,serviceaccount-controller,pod-garbage-collector-controller",
            "--leader-elect=false",
            "--secure-port=0",
        ],
    )?;
    // The serviceaccount controller creating `default` proves the controller manager works.
    wait_for(
        Duration::from_secs(60),
        "kube-controller-manager (default ServiceAccount)",
        || {
            let sa = kube::Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
                client.clone(),
                "default",
            );
            Ok(runtime
                .block_on(sa.get_opt("default"))
                .ok()
                .flatten()
                .is_some())
        },
    )?;
    Ok(cp)
}

fn kubeconfig_text(server: &str, ca_file: &Path, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: reclaim-local\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
         users:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: reclaim-local\n  context:\n    cluster: reclaim-local\n    user: {user}\n\
         current-context: reclaim-local\n",
        ca = ca_file.display()
    )
}

/// Spawns a component whose output goes to `<dir>/<name>.log`, with the kernel told to
/// kill it when this process dies.
fn spawn(program: &Path, dir: &Path, name: &str, args: &[&str]) -> Result<()> {
    let log = fs::File::create(dir.join(format!("{name}.log")))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may already have died before the death signal was armed.
            if libc::getppid() == 1 {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    RUNNING
        .lock()
        .unwrap()
        .as_mut()
        .expect("RUNNING is set before components start")
        .children
        .push(child);
    Ok(())
}

/// Polls `check` until it returns true; on timeout, or when a component has exited,
/// fails with the tail of every component's log.
fn wait_for(timeout: Duration, what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    loop {
        if check()? {
            return Ok(());
        }
        if let Some(exited) = exited_component() {
            bail!("{exited} while waiting for {what}\n{}", log_tails());
        }
        if start.elapsed() > timeout {
            bail!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                log_tails()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn exited_component() -> Option<String> {
    let mut running = RUNNING.lock().unwrap();
    running
        .as_mut()?
        .children
        .iter_mut()
        .find_map(|child| match child.try_wait() {
            Ok(Some(status)) => Some(format!("component pid {} exited ({status})", child.id())),
            _ => None,
        })
}

fn log_tails() -> String {
    let Some(dir) = RUNNING.lock().unwrap().as_ref().map(|r| r.dir.clone()) else {
        return String::new();
    };
    let mut out = String::new();
    for name in ["etcd", "kube-apiserver", "kube-controller-manager"] {
        if let Ok(text) = fs::read_to_string(dir.join(format!("{name}.log"))) {
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- {name}.log (last lines) ---\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

extern "C" fn stop_at_exit() {
    let Ok(mut guard) = RUNNING.lock() else {
        return;
    };
    if let Some(mut running) = guard.take() {
        // Reverse order: controller manager, API server, then etcd.
        for child in running.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&running.dir);
    }
}

/// Removes data directories whose owning process no longer exists (run at every start).
pub fn sweep_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "{DIR_PREFIX}{}-{}",
        std::process::id(),
        random_hex(4)?
    ));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Three distinct free loopback ports, all held until chosen so they differ.
fn free_ports() -> Result<[u16; 3]> {
    let listeners = [
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
    ];
    let ports = [
        listeners[0].local_addr()?.port(),
        listeners[1].local_addr()?.port(),
        listeners[2].local_addr()?.port(),
    ];
    Ok(ports)
}

pub(crate) fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

impl std::fmt::Display for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Kubernetes {} at {} (kubeconfig {})",
            self.version,
            self.server,
            self.kubeconfig.display()
        )
    }
}
