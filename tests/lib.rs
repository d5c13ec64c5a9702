//! Shared fixtures for the integration tests and benchmarks: stores over real backends, and
//! real servers (etcd) started and stopped by the tests.

use std::sync::Arc;

#[path = "src/skiff_up.rs"]
pub mod skiff_up;

use skiff_apiserver::storage::Store;

/// A way to open a store, and to reopen it over the same data (restart durability).
#[async_trait::async_trait]
pub trait StoreFixture: Send + Sync {
    /// Opens a store over this fixture's data; each call is a fresh handle (a "restart").
    async fn open(&self) -> anyhow::Result<Arc<dyn Store>>;
}

/// The self-checking objects the kill -9 durability test writes (`store-writer`) and verifies.
pub mod durability {
    use serde_json::{Value, json};

    /// The encryption key both the writer and the verifier open the database with.
    pub fn key_bytes() -> [u8; 32] {
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(91).wrapping_add(7);
        }
        key
    }

    /// The payload an object carries at `count` (its length varies with the count).
    pub fn payload(name: &str, count: u64) -> String {
        let unit = format!("{name}:{count};");
        unit.repeat(1 + (count as usize * 7) % 40)
    }

    /// FNV-1a over the name, count and payload.
    pub fn checksum(name: &str, count: u64, payload: &str) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name
            .bytes()
            .chain(count.to_le_bytes())
            .chain(payload.bytes())
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// The object `name` at `count`: complete only if its checksum matches.
    pub fn object(name: &str, count: u64) -> Value {
        let payload = payload(name, count);
        let sum = checksum(name, count, &payload);
        json!({"metadata": {"name": name}, "count": count, "payload": payload, "checksum": sum})
    }
}

// =============================================================================================
// etcd fixtures (owned by the etcd backend): a real etcd server per test setup, and stores on it.
// =============================================================================================

pub use etcd_fixture::{EtcdFixture, EtcdServer};

mod etcd_fixture {
    use std::io::{Read as _, Write as _};
    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, LazyLock, Mutex, mpsc};
    use std::time::{Duration, Instant};

    use anyhow::{Context as _, bail};
    use skiff_apiserver::storage::{Codec, EncryptionKey, EtcdStore, Store};

    use super::StoreFixture;

    const ETCD: &str = "/usr/bin/etcd";
    const SETPRIV: &str = "/usr/bin/setpriv";
    /// How long a fresh etcd may take to answer (a loaded 2-core CI machine is slow).
    const READY_TIMEOUT: Duration = Duration::from_secs(30);
    /// The tests' fixed encryption key: the same on every open, so Secrets survive a reopen.
    const TEST_KEY: [u8; 32] = *b"skiff-etcd-test-key-32-bytes-ok!";

    /// A real etcd (Debian `etcd-server`), alone in a temporary data dir, on loopback ports
    /// only. Killed (by PID) and its data dir removed on drop; and since it is started with
    /// a parent-death signal from a thread that lives as long as the test process, no etcd
    /// outlives the tests even when they are killed.
    #[derive(Debug)]
    pub struct EtcdServer {
        child: Child,
        /// `http://127.0.0.1:PORT`
        pub client_url: String,
        dir: tempfile::TempDir,
    }

    impl EtcdServer {
        /// Starts etcd on free loopback ports and waits until it answers.
        pub fn start() -> anyhow::Result<EtcdServer> {
            if !Path::new(ETCD).exists() {
                bail!(
                    "{ETCD} is missing: the etcd tests need a real etcd 3.4. Run `scripts/bootstrap` \
                     (or `apt-get install etcd-server`)"
                );
            }
            sweep_stale_dirs();
            // A free port can be taken between our probe and etcd's bind: try a few times.
            let mut last = None;
            for _ in 0..3 {
                match Self::start_once() {
                    Ok(server) => return Ok(server),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| anyhow::anyhow!("etcd did not start")))
        }

        fn start_once() -> anyhow::Result<EtcdServer> {
            let dir = tempfile::Builder::new()
                .prefix(&format!("skiff-etcd-{}-", std::process::id()))
                .tempdir()
                .context("creating etcd's data dir")?;
            let (client_port, peer_port) = (free_port()?, free_port()?);
            let client_url = format!("http://127.0.0.1:{client_port}");
            let peer_url = format!("http://127.0.0.1:{peer_port}");
            let log_path = dir.path().join("etcd.log");
            let log = std::fs::File::create(&log_path).context("creating etcd's log file")?;
            let log2 = log.try_clone().context("creating etcd's log file")?;
            let etcd_args = [
                "--name".to_owned(),
                "skiff-test".to_owned(),
                "--data-dir".to_owned(),
                dir.path().join("data").display().to_string(),
                "--listen-client-urls".to_owned(),
                client_url.clone(),
                "--advertise-client-urls".to_owned(),
                client_url.clone(),
                "--listen-peer-urls".to_owned(),
                peer_url.clone(),
                "--initial-advertise-peer-urls".to_owned(),
                peer_url.clone(),
                "--initial-cluster".to_owned(),
                format!("skiff-test={peer_url}"),
                "--initial-cluster-state".to_owned(),
                "new".to_owned(),
                "--logger".to_owned(),
                "zap".to_owned(),
                "--log-level".to_owned(),
                "warn".to_owned(),
            ];
            // setpriv (util-linux) sets PR_SET_PDEATHSIG and execs etcd, so etcd is killed
            // with the spawning thread; without setpriv, Drop is the only cleanup.
            let mut cmd = if Path::new(SETPRIV).exists() {
                let mut cmd = Command::new(SETPRIV);
                cmd.args(["--pdeathsig", "KILL", "--", ETCD]);
                cmd
            } else {
                Command::new(ETCD)
            };
            cmd.args(&etcd_args)
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log2));
            let child = spawn_from_long_lived_thread(cmd).context("spawning etcd")?;
            let mut server = EtcdServer {
                child,
                client_url,
                dir,
            };
            server.wait_ready(client_port, &log_path)?;
            Ok(server)
        }

        fn wait_ready(&mut self, port: u16, log: &Path) -> anyhow::Result<()> {
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                if let Some(status) = self.child.try_wait().context("waiting for etcd")? {
                    bail!(
                        "etcd exited at start ({status}); its log ends:\n{}",
                        tail(log)
                    );
                }
                if healthy(port) {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!(
                        "etcd did not answer on {} within {READY_TIMEOUT:?}; its log ends:\n{}",
                        self.client_url,
                        tail(log)
                    );
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }

        /// The client endpoint, `127.0.0.1:PORT`, as `EtcdStore::connect` takes it.
        pub fn endpoint(&self) -> String {
            self.client_url.trim_start_matches("http://").to_owned()
        }

        /// etcd's PID.
        pub fn pid(&self) -> u32 {
            self.child.id()
        }

        /// The data dir.
        pub fn dir(&self) -> PathBuf {
            self.dir.path().to_owned()
        }

        /// Kills etcd now (SIGKILL) and reaps it, e.g. to test what clients do when it vanishes.
        pub fn kill(&mut self) -> anyhow::Result<()> {
            if self.child.try_wait()?.is_none() {
                self.child.kill().context("killing etcd")?;
            }
            self.child.wait().context("reaping etcd")?;
            Ok(())
        }
    }

    impl Drop for EtcdServer {
        fn drop(&mut self) {
            let _ = self.kill();
        }
    }

    fn free_port() -> anyhow::Result<u16> {
        let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
        Ok(listener.local_addr()?.port())
    }

    /// etcd's `/health` endpoint says `"health":"true"`.
    fn healthy(port: u16) -> bool {
        let Ok(mut conn) =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
        else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
        if conn
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer);
        answer.contains("\"health\":\"true\"")
    }

    fn tail(log: &Path) -> String {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

    /// A thread that lives until the process exits and spawns every etcd: the parent-death
    /// signal fires when the *thread* that spawned a child ends, and test threads end early.
    static SPAWNER: LazyLock<Option<Mutex<mpsc::Sender<SpawnRequest>>>> = LazyLock::new(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("etcd-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });

    fn spawn_from_long_lived_thread(mut cmd: Command) -> anyhow::Result<Child> {
        let Some(spawner) = SPAWNER.as_ref() else {
            return Ok(cmd.spawn()?);
        };
        let (reply_tx, reply_rx) = mpsc::channel();
        spawner
            .lock()
            .map_err(|_| anyhow::anyhow!("the etcd spawner lock is poisoned"))?
            .send((cmd, reply_tx))
            .map_err(|_| anyhow::anyhow!("the etcd spawner thread is gone"))?;
        Ok(reply_rx
            .recv()
            .context("the etcd spawner thread is gone")??)
    }

    /// Removes data dirs left by test processes that died without cleaning up.
    fn sweep_stale_dirs() {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("skiff-etcd-")) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Stores under one unique key prefix of one etcd: every `open()` is a new client (as
    /// another API server process would be), over the same data.
    #[derive(Debug, Clone)]
    pub struct EtcdFixture {
        pub server: Arc<EtcdServer>,
        pub endpoints: Vec<String>,
        pub prefix: String,
    }

    impl EtcdFixture {
        /// A fixture on an etcd of its own (stopped when the last clone is dropped): what the
        /// battery uses, since its compaction tests compact the whole etcd.
        pub fn start() -> anyhow::Result<EtcdFixture> {
            Ok(Self::on(Arc::new(EtcdServer::start()?)))
        }

        /// A fixture with a fresh prefix on `server`.
        pub fn on(server: Arc<EtcdServer>) -> EtcdFixture {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            EtcdFixture {
                endpoints: vec![server.endpoint()],
                prefix: format!("/skiff-test-{}-{n}", std::process::id()),
                server,
            }
        }

        /// The codec every open uses (fixed test key).
        pub fn codec() -> anyhow::Result<Codec> {
            Ok(Codec::new(Some(EncryptionKey::from_bytes(&TEST_KEY)?)))
        }

        /// A new concrete store handle.
        pub async fn connect(&self) -> anyhow::Result<EtcdStore> {
            Ok(EtcdStore::connect(&self.endpoints, &self.prefix, Self::codec()?).await?)
        }
    }

    #[async_trait::async_trait]
    impl StoreFixture for EtcdFixture {
        async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
            Ok(Arc::new(self.connect().await?))
        }
    }
}
