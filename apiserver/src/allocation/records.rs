//! Allocation records in the store: one key per ClusterIP and per node port, created atomically (a taken key fails with AlreadyExists), so several API servers on one store never hand out a value twice.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::{Value, json};

use crate::storage::{ObjectKey, Preconditions, ResourceName, Scope, Store, StoreError};

/// Private resource prefixes: no kind maps to them, so no REST path reaches them.
const IP_RESOURCE: &str = "serviceips.allocation.skiff.internal";
const PORT_RESOURCE: &str = "servicenodeports.allocation.skiff.internal";

/// Which table a record lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    ClusterIp,
    NodePort,
}

impl Table {
    fn resource(self) -> Result<ResourceName, StoreError> {
        ResourceName::new(match self {
            Table::ClusterIp => IP_RESOURCE,
            Table::NodePort => PORT_RESOURCE,
        })
    }

    pub fn key(self, value: &str) -> Result<ObjectKey, StoreError> {
        Ok(ObjectKey::new(self.resource()?, None, value))
    }
}

/// The Service a record belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub value: String,
    pub owner: Option<Owner>,
    pub uid: String,
    pub created: String,
}

/// A record this request created: released again (by uid) if the Service write fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub key: ObjectKey,
    pub uid: String,
}

fn body(value: &str, owner: &Owner) -> Value {
    json!({
        "apiVersion": "allocation.skiff.internal/v1",
        "kind": "ServiceAllocation",
        "metadata": {"name": value},
        "owner": {"namespace": owner.namespace, "name": owner.name},
    })
}

/// Creates the record for `value`; `Ok(None)` when someone holds it already.
pub async fn claim(
    store: &dyn Store,
    table: Table,
    value: &str,
    owner: &Owner,
) -> Result<Option<Created>, StoreError> {
    let key = table.key(value)?;
    match store.create(&key, body(value, owner)).await {
        Ok(stored) => {
            let uid = stored["metadata"]["uid"].as_str().unwrap_or("").to_owned();
            Ok(Some(Created { key, uid }))
        }
        Err(StoreError::AlreadyExists(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes a record this request created (by uid: never someone else's).
pub async fn unclaim(store: &dyn Store, created: &Created) {
    let pre = Preconditions {
        resource_version: None,
        uid: Some(created.uid.clone()).filter(|u| !u.is_empty()),
    };
    match store.delete(&created.key, &pre).await {
        Ok(_) | Err(StoreError::NotFound(_)) => {}
        Err(error) => {
            tracing::warn!(key = %created.key, %error, "could not roll back an allocation (the repair pass frees it)");
        }
    }
}

/// Deletes the record for `value` if `owner` holds it (a record another Service holds stays).
pub async fn release(store: &dyn Store, table: Table, value: &str, owner: &Owner) {
    let result = async {
        let key = table.key(value)?;
        let stored = match store.get(&key).await {
            Ok(v) => v,
            Err(StoreError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let record = parse(&stored);
        if record.owner.as_ref() != Some(owner) {
            return Ok(());
        }
        let pre = Preconditions {
            resource_version: None,
            uid: Some(record.uid).filter(|u| !u.is_empty()),
        };
        match store.delete(&key, &pre).await {
            Ok(_) | Err(StoreError::NotFound(_)) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
    .await;
    if let Err(error) = result {
        tracing::warn!(value, %owner, %error, "could not release an allocation (the repair pass frees it)");
    }
}

fn parse(stored: &Value) -> Record {
    let owner = &stored["owner"];
    Record {
        value: stored["metadata"]["name"].as_str().unwrap_or("").to_owned(),
        owner: match (owner["namespace"].as_str(), owner["name"].as_str()) {
            (Some(ns), Some(name)) => Some(Owner {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            }),
            _ => None,
        },
        uid: stored["metadata"]["uid"].as_str().unwrap_or("").to_owned(),
        created: stored["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    }
}

/// Every record of a table.
pub async fn list(store: &dyn Store, table: Table) -> Result<Vec<Record>, StoreError> {
    let list = store.list(&Scope::all(table.resource()?)).await?;
    Ok(list.items.iter().map(parse).collect())
}

/// The ClusterIPs recorded as taken.
pub async fn taken_ips(store: &dyn Store) -> Result<HashSet<IpAddr>, StoreError> {
    Ok(list(store, Table::ClusterIp)
        .await?
        .iter()
        .filter_map(|r| r.value.parse().ok())
        .collect())
}

/// The node ports recorded as taken.
pub async fn taken_ports(store: &dyn Store) -> Result<HashSet<u16>, StoreError> {
    Ok(list(store, Table::NodePort)
        .await?
        .iter()
        .filter_map(|r| r.value.parse().ok())
        .collect())
}

/// Replaces the record for `value` so `owner` holds it (repair of a record with a wrong owner).
pub async fn reassign(
    store: &dyn Store,
    table: Table,
    record: &Record,
    owner: &Owner,
) -> Result<(), StoreError> {
    let key = table.key(&record.value)?;
    let mut next = body(&record.value, owner);
    if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("uid".into(), json!(record.uid));
    }
    let pre = Preconditions {
        resource_version: None,
        uid: Some(record.uid.clone()).filter(|u| !u.is_empty()),
    };
    store.update(&key, next, &pre).await.map(|_| ())
}

/// Deletes a record by uid (repair of a leaked record).
pub async fn remove(store: &dyn Store, table: Table, record: &Record) -> Result<(), StoreError> {
    let pre = Preconditions {
        resource_version: None,
        uid: Some(record.uid.clone()).filter(|u| !u.is_empty()),
    };
    match store.delete(&table.key(&record.value)?, &pre).await {
        Ok(_) | Err(StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
