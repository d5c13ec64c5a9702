//! The repair pass (upstream's ClusterIP and NodePort repair controllers): records with no Service holding their value are freed, Services whose values have no record get one.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;

use super::plan::{self, ServiceNetwork};
use super::records::{self, Owner, Table};
use crate::storage::{ResourceName, Scope, Store, StoreError};

/// A record younger than this may belong to a create still in flight (on this or another API
/// server: records are written before their Service), so it is never freed.
pub const GRACE: Duration = Duration::from_secs(30);

/// What a pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub freed: usize,
    pub recorded: usize,
    pub reassigned: usize,
    /// Values two Services claim (logged; upstream reports them as events).
    pub conflicts: usize,
}

/// One pass over every Service and record.
pub async fn repair(
    store: &dyn Store,
    net: &ServiceNetwork,
    grace: Duration,
) -> Result<Report, StoreError> {
    let services = store
        .list(&Scope::all(ResourceName::new("services")?))
        .await?;
    let mut want: HashMap<(Table, String), Owner> = HashMap::new();
    let mut report = Report::default();
    for value in &services.items {
        let Ok(svc) = serde_json::from_value::<Service>(value.clone()) else {
            continue;
        };
        let owner = Owner {
            namespace: svc.metadata.namespace.clone().unwrap_or_default(),
            name: svc.metadata.name.clone().unwrap_or_default(),
        };
        let ips = plan::held_ips(&svc)
            .into_iter()
            .filter(|ip| net.cidrs.iter().any(|c| c.contains(ip)))
            .map(|ip| (Table::ClusterIp, ip.to_string()));
        let ports = plan::held_ports(&svc)
            .into_iter()
            .filter(|p| net.node_ports.contains(p))
            .map(|p| (Table::NodePort, p.to_string()));
        for key in ips.chain(ports) {
            if let Some(other) = want.get(&key).filter(|o| **o != owner) {
                tracing::warn!(value = key.1, first = %other, second = %owner, "two Services hold the same allocated value");
                report.conflicts += 1;
                continue;
            }
            want.insert(key, owner.clone());
        }
    }
    let cutoff = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::try_from(grace).unwrap_or_default())
        .unwrap_or_default();
    for table in [Table::ClusterIp, Table::NodePort] {
        for record in records::list(store, table).await? {
            let old_enough = record
                .created
                .parse::<jiff::Timestamp>()
                .is_ok_and(|t| t <= cutoff);
            match want.remove(&(table, record.value.clone())) {
                Some(owner) if record.owner.as_ref() == Some(&owner) => {}
                Some(owner) if old_enough => {
                    records::reassign(store, table, &record, &owner).await?;
                    report.reassigned += 1;
                }
                Some(_) => {}
                None if old_enough => {
                    tracing::info!(value = record.value, owner = ?record.owner, "freeing an allocation no Service holds");
                    records::remove(store, table, &record).await?;
                    report.freed += 1;
                }
                None => {}
            }
        }
    }
    for ((table, value), owner) in want {
        match records::claim(store, table, &value, &owner).await? {
            Some(_) => report.recorded += 1,
            None => report.conflicts += 1,
        }
    }
    if report != Report::default() {
        tracing::info!(?report, "service allocation repair");
    }
    Ok(report)
}
