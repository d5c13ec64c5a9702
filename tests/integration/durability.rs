//! kill -9 durability of the SQLite store: a child process (`store-writer`) writes and acks
//! each write after it resolved; it is killed with SIGKILL at a random moment; the store
//! reopened must hold every acknowledged write (at least at its acked state), and every object
//! in it must be complete and valid.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher as _, Hasher as _};
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Value, json};
use skiff_apiserver::storage::{
    Codec, EncryptionKey, ObjectKey, ResourceName, Scope, SqliteStore, Store,
};
use skiff_tests::durability::{checksum, key_bytes, payload};

const ROUNDS: usize = 5;

fn random(below: u64) -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % below.max(1)
}

/// Checks that a stored object is complete: its payload and checksum match its count.
fn check_object(o: &Value) -> Result<u64> {
    let name = o["metadata"]["name"].as_str().context("no name")?;
    let count = o["count"]
        .as_u64()
        .with_context(|| format!("{name}: no count"))?;
    let p = o["payload"]
        .as_str()
        .with_context(|| format!("{name}: no payload"))?;
    ensure!(
        p == payload(name, count),
        "{name}: payload does not match count {count}"
    );
    ensure!(
        o["checksum"].as_str() == Some(checksum(name, count, p).as_str()),
        "{name}: checksum mismatch at count {count}"
    );
    Ok(count)
}

#[derive(Debug, Default)]
struct Acked {
    /// (resource, name) → (highest acked count, its resourceVersion).
    objects: BTreeMap<(String, String), (u64, u64)>,
    revisions: BTreeSet<u64>,
    lines: usize,
}

impl Acked {
    fn record(&mut self, line: &str) -> Result<()> {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let ["ack", resource, name, count, rv] = parts[..] else {
            bail!("unexpected line from store-writer: {line:?}");
        };
        let (count, rv): (u64, u64) = (count.parse()?, rv.parse()?);
        ensure!(
            self.revisions.insert(rv),
            "two acked writes share revision {rv}"
        );
        let entry = self
            .objects
            .entry((resource.to_owned(), name.to_owned()))
            .or_default();
        ensure!(count >= entry.0, "acks for {name} out of order");
        *entry = (count, rv);
        self.lines += 1;
        Ok(())
    }
}

/// Runs the writer until `kill_after` acks (or `kill_at` elapsed), kills it with SIGKILL and
/// returns everything it acknowledged.
fn run_and_kill(db: &Path, prefix: &str, kill_after: usize, kill_at: Duration) -> Result<Acked> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_store-writer"))
        .arg(db)
        .arg(prefix)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting store-writer")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // A line cut short by the kill was never a complete ack.
                Ok(_) if !line.ends_with('\n') => break,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut acked = Acked::default();
    let mut exited_early = false;
    // The kill clock starts at the first ack, so a slow start on a loaded machine cannot turn
    // a round into one that checks nothing.
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => acked.record(&line)?,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            child.kill().context("SIGKILL store-writer")?;
            bail!("store-writer acknowledged nothing within 60 s");
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => exited_early = true,
    }
    let start = Instant::now();
    while !exited_early && acked.lines < kill_after && start.elapsed() < kill_at {
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(line) => acked.record(&line)?,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                exited_early = true;
                break;
            }
        }
    }
    child.kill().context("SIGKILL store-writer")?;
    let status = child.wait()?;
    if exited_early {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            e.read_to_string(&mut err)?;
        }
        bail!(
            "store-writer exited by itself ({status}) after {} acks: {err}",
            acked.lines
        );
    }
    // Acks already in the pipe when the child died were acknowledged too.
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))?;
    for line in rx.try_iter() {
        acked.record(&line)?;
    }
    Ok(acked)
}

async fn verify(db: &Path, prefix: &str, acked: &Acked) -> Result<u64> {
    let store = SqliteStore::open(
        db,
        Codec::new(Some(EncryptionKey::from_bytes(&key_bytes())?)),
    )?;
    let current = store.current_revision().await?;
    if let Some(max) = acked.revisions.last() {
        ensure!(
            current >= *max,
            "current revision {current} is before acked revision {max}"
        );
    }
    for ((resource, name), (count, rv)) in &acked.objects {
        let key = ObjectKey::new(
            ResourceName::new(resource.as_str())?,
            Some("durability"),
            name,
        );
        let o = store
            .get(&key)
            .await
            .with_context(|| format!("acked object {key} is missing"))?;
        let stored = check_object(&o)?;
        ensure!(
            stored >= *count,
            "{key}: acked count {count}, stored {stored}"
        );
        let stored_rv: u64 = o["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .parse()?;
        ensure!(
            stored_rv >= *rv,
            "{key}: acked at {rv}, stored at {stored_rv}"
        );
    }
    // Every object in the store, acked or not, is complete.
    let mut total = 0;
    for resource in ["configmaps", "secrets"] {
        let list = store
            .list(&Scope::namespace(
                ResourceName::new(resource)?,
                "durability",
            ))
            .await?;
        for o in &list.items {
            check_object(o)?;
        }
        total += list
            .items
            .iter()
            .filter(|o| {
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(&format!("{prefix}-"))
            })
            .count();
    }
    ensure!(total >= acked.objects.len());
    // The store is writable again, and revisions continue.
    let probe = ObjectKey::new(ResourceName::new("configmaps")?, Some("probe"), prefix);
    let created = store.create(&probe, json!({"metadata": {}})).await?;
    let rv: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .parse()?;
    ensure!(rv > current);
    Ok(current)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("skiff.db");
    let mut last_revision = 0;
    for round in 0..ROUNDS {
        let prefix = format!("r{round}");
        // Kill after a random number of acks, or at a random time if that comes first.
        let kill_after = 1 + random(3000) as usize;
        let kill_at = Duration::from_millis(200 + random(1500));
        let acked =
            tokio::task::block_in_place(|| run_and_kill(&db, &prefix, kill_after, kill_at))?;
        let current = verify(&db, &prefix, &acked).await?;
        ensure!(
            current >= last_revision,
            "revision went backwards across rounds"
        );
        last_revision = current;
        eprintln!(
            "round {round}: killed after {} acks ({} objects), revision {current}",
            acked.lines,
            acked.objects.len()
        );
    }
    Ok(())
}
