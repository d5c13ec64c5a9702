//! A child process for the kill -9 durability test: opens a `SqliteStore` and writes until it
//! is killed, printing one ack line per write to stdout only after the write's future resolved.
//!
//! Usage: `store-writer <database path> <object name prefix>`
//!
//! Ack lines: `ack <resource> <name> <count> <resourceVersion>`. Every object holds a `count`,
//! a `payload` whose length and content depend on the name and count, and a `checksum` over
//! both (see `checksum`), so a torn or partial object is detectable.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use skiff_apiserver::storage::{
    Codec, EncryptionKey, ObjectKey, Preconditions, ResourceName, SqliteStore, Store, StoreError,
};
use skiff_tests::durability::{key_bytes, object};

/// Writers in flight at once.
const TASKS: usize = 16;
/// Objects per writer task.
const OBJECTS_PER_TASK: usize = 8;

struct Acks(Mutex<std::io::Stdout>);

impl Acks {
    fn ack(&self, key: &ObjectKey, count: u64, stored: &Value) -> Result<()> {
        let rv = stored["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("?");
        let line = format!("ack {} {} {count} {rv}\n", key.resource, key.name);
        let mut out = self
            .0
            .lock()
            .map_err(|_| anyhow::anyhow!("stdout lock poisoned"))?;
        out.write_all(line.as_bytes())?;
        out.flush()?;
        Ok(())
    }
}

async fn writer(
    store: Arc<SqliteStore>,
    acks: Arc<Acks>,
    prefix: String,
    task: usize,
) -> Result<()> {
    let mut keys = Vec::new();
    for i in 0..OBJECTS_PER_TASK {
        let resource = if i % 4 == 0 { "secrets" } else { "configmaps" };
        let name = format!("{prefix}-t{task}-o{i}");
        keys.push(ObjectKey::new(
            ResourceName::new(resource)?,
            Some("durability"),
            &name,
        ));
    }
    for k in &keys {
        let stored = store.create(k, object(&k.name, 0)).await?;
        acks.ack(k, 0, &stored)?;
    }
    let mut counts = vec![0u64; keys.len()];
    let mut versions: Vec<String> = vec![String::new(); keys.len()];
    for (i, k) in keys.iter().enumerate() {
        versions[i] = store.get(k).await?["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_owned();
    }
    loop {
        for (i, k) in keys.iter().enumerate() {
            let next = counts[i] + 1;
            let mut o = object(&k.name, next);
            o["metadata"]["resourceVersion"] = json!(versions[i]);
            match store.update(k, o, &Preconditions::default()).await {
                Ok(stored) => {
                    acks.ack(k, next, &stored)?;
                    counts[i] = next;
                    versions[i] = stored["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                }
                Err(e @ StoreError::Conflict { .. }) => bail!("{k}: nobody else writes it: {e}"),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(prefix)) = (args.next(), args.next()) else {
        bail!("usage: store-writer <database path> <object name prefix>");
    };
    let codec = Codec::new(Some(EncryptionKey::from_bytes(&key_bytes())?));
    let store =
        Arc::new(SqliteStore::open(&PathBuf::from(&path), codec).context("opening the store")?);
    let acks = Arc::new(Acks(Mutex::new(std::io::stdout())));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        tasks.push(tokio::spawn(writer(
            store.clone(),
            acks.clone(),
            prefix.clone(),
            task,
        )));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}
