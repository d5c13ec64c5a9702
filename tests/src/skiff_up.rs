//! A `skiff up` process for end-to-end tests and benchmarks: started from the `skiff` binary
//! built beside the caller, ready once it prints its ready line, torn down by SIGTERM on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// How long `skiff up` may take to print its ready line, and to exit after SIGTERM.
const READY_WITHIN: Duration = Duration::from_secs(90);
const EXIT_WITHIN: Duration = Duration::from_secs(60);

/// The `skiff` binary of the caller's cargo profile: `target/<profile>/skiff`, one level
/// above the `deps/` folder that holds test and bench executables.
pub fn skiff_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the running executable has no target dir")?;
    let skiff = profile_dir.join("skiff");
    ensure!(
        skiff.exists(),
        "{} is missing: build it first (`cargo build -p skiff`, with `--release` for benchmarks; \
         scripts/test and `make bench` do)",
        skiff.display()
    );
    Ok(skiff)
}

/// A running `skiff up --name NAME --data-dir DIR` on free ports.
#[derive(Debug)]
pub struct SkiffUp {
    child: Child,
    /// The admin kubeconfig from the ready line.
    pub kubeconfig: PathBuf,
}

impl SkiffUp {
    /// Starts `skiff up` with every published port on 0 (free ones; `extra` may give
    /// `--http-port`, `--https-port`, `--dns-port` and `--admin-addr`) and `extra` arguments,
    /// and waits for its ready line. Its logs go to this process's stderr.
    pub fn start(name: &str, data_dir: &Path, extra: &[&std::ffi::OsStr]) -> Result<SkiffUp> {
        Self::start_with_stderr(name, data_dir, extra, Stdio::inherit())
    }

    /// [`SkiffUp::start`] with its logs appended to `log` instead (a benchmark's output stays
    /// readable; the file says what happened).
    pub fn start_logging_to(
        name: &str,
        data_dir: &Path,
        extra: &[&std::ffi::OsStr],
        log: &Path,
    ) -> Result<SkiffUp> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        Self::start_with_stderr(name, data_dir, extra, file.into())
    }

    fn start_with_stderr(
        name: &str,
        data_dir: &Path,
        extra: &[&std::ffi::OsStr],
        stderr: Stdio,
    ) -> Result<SkiffUp> {
        let mut cmd = Command::new(skiff_exe()?);
        cmd.args(["up", "--name", name, "--api-port", "0"]);
        for (flag, free) in [
            ("--http-port", "0"),
            ("--https-port", "0"),
            ("--dns-port", "0"),
            ("--admin-addr", "127.0.0.1:0"),
        ] {
            if !extra.iter().any(|a| *a == flag) {
                cmd.args([flag, free]);
            }
        }
        let mut child = cmd
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("start skiff up")?;
        let stdout = child.stdout.take().context("skiff up stdout")?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        // From here on, Drop tears it down whatever happens.
        let mut up = SkiffUp {
            child,
            kubeconfig: PathBuf::new(),
        };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(path) = line.strip_prefix("skiff is ready: kubeconfig=") {
                        up.kubeconfig = PathBuf::from(path);
                        return Ok(up);
                    }
                }
                Err(_) => {
                    if let Some(status) = up.child.try_wait()? {
                        bail!("skiff up exited with {status} before it was ready");
                    }
                    bail!("skiff up printed no ready line within {READY_WITHIN:?}");
                }
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A kube client with the admin kubeconfig.
    pub async fn client(&self) -> Result<kube::Client> {
        Ok(skiff_controller::standalone::client_from_kubeconfig(&self.kubeconfig).await?)
    }

    /// Sends SIGTERM (to this process's PID only) and returns the exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if self.child.try_wait()?.is_none() {
            let pid = self.child.id().to_string();
            let sent = Command::new("kill").args(["-TERM", &pid]).status()?;
            ensure!(sent.success(), "kill -TERM {pid} failed");
        }
        let deadline = Instant::now() + EXIT_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "skiff up did not exit within {EXIT_WITHIN:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SkiffUp {
    fn drop(&mut self) {
        if self.stop().is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
