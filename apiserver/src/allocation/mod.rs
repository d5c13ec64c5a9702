//! Service ClusterIP, NodePort and healthCheckNodePort allocation at create/update time, as upstream's API server does it, persisted as store records.
//!
//! `plan` decides (pure) what a Service needs; `records` holds each allocated value as one
//! store key, created atomically, so two API servers on one etcd never hand out a value twice
//! and a restart finds every allocation; `repair` reconciles records with Services at start
//! and periodically (upstream's repair controllers). The server calls [`ServiceAllocator`]
//! around its store writes: allocate before, then `commit` (release what the Service no longer
//! holds) or `rollback` (release what was just claimed) after.

pub mod plan;
pub mod range;
pub mod records;
pub mod repair;

use std::collections::HashSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use skiff_api::{FieldError, FieldErrorType, FieldErrors};

pub use plan::{Reserved, ServiceNetwork};
pub use range::{Cidr, CidrError, Family};
pub use records::Owner;

use crate::storage::{Store, StoreError};
use plan::{IpSlot, PortSlot};
use records::{Created, Table};

/// How many taken candidates a dynamic allocation skips before re-reading the records.
const PICK_ATTEMPTS: usize = 64;
/// Random picks claimed without reading the records first. Any range with room left takes
/// most of them; each one that is taken costs one failed create, and after these the records
/// are read (once per request) and the pick skips what they hold. Reading them for every
/// allocation made creating the n-th Service O(n): 12 creates a second at 6,000 Services.
const BLIND_PICKS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// 422: a requested value is out of range, taken, reserved or immutable.
    #[error("{0}")]
    Invalid(FieldErrors),
    /// 500 as upstream: no free value left.
    #[error("failed to allocate a {0}: range is full")]
    Full(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The configuration of the service network (`--service-cidr`, `--cluster-dns`,
/// `--service-node-port-range`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationConfig {
    pub service_cidrs: String,
    /// The kube-dns ClusterIP, reserved for `kube-system/kube-dns`.
    pub cluster_dns: Option<String>,
}

impl Default for AllocationConfig {
    fn default() -> Self {
        Self {
            service_cidrs: "10.96.0.0/12,fd00:10:96::/112".into(),
            cluster_dns: Some("10.96.0.10".into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--service-cidr: {0}")]
    Cidr(#[from] CidrError),
    #[error("--service-cidr: at most one CIDR per IP family, and at least one ({0:?})")]
    Families(String),
    #[error("--cluster-dns {0:?} is not an address of the service CIDRs")]
    ClusterDns(String),
}

impl AllocationConfig {
    /// The network these flags describe. The first address of the primary range is reserved
    /// for `default/kubernetes`, as upstream's API server keeps it.
    pub fn network(
        &self,
        node_ports: std::ops::RangeInclusive<u16>,
    ) -> Result<ServiceNetwork, ConfigError> {
        let cidrs = self
            .service_cidrs
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Cidr::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let families: HashSet<Family> = cidrs.iter().map(Cidr::family).collect();
        if cidrs.is_empty() || families.len() != cidrs.len() {
            return Err(ConfigError::Families(self.service_cidrs.clone()));
        }
        let mut reserved = Vec::new();
        if let Some(first) = cidrs.first().and_then(|c| c.nth(0)) {
            reserved.push(Reserved {
                ip: first,
                namespace: "default".into(),
                name: "kubernetes".into(),
            });
        }
        if let Some(dns) = self.cluster_dns.as_deref().filter(|s| !s.is_empty()) {
            let ip: IpAddr = dns
                .parse()
                .map_err(|_| ConfigError::ClusterDns(dns.to_owned()))?;
            if !cidrs.iter().any(|c| c.offset_of(&ip).is_some()) {
                return Err(ConfigError::ClusterDns(dns.to_owned()));
            }
            reserved.push(Reserved {
                ip,
                namespace: "kube-system".into(),
                name: "kube-dns".into(),
            });
        }
        Ok(ServiceNetwork {
            cidrs,
            node_ports,
            reserved,
        })
    }
}

/// What an allocation claimed, and what the Service held before and no longer does.
#[derive(Debug, Default)]
pub struct Holding {
    owner: Option<Owner>,
    created: Vec<Created>,
    stale: Vec<(Table, String)>,
}

impl Holding {
    /// Claims `value` in `table` for `owner`; a claim won is held from here on (released if
    /// the Service write fails). False: someone else holds it.
    async fn claim(
        &mut self,
        store: &dyn Store,
        table: Table,
        value: &str,
        owner: &Owner,
    ) -> Result<bool, StoreError> {
        match records::claim(store, table, value, owner).await? {
            Some(created) => {
                self.created.push(created);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Allocates for Services against one store.
#[derive(Debug, Clone)]
pub struct ServiceAllocator {
    net: ServiceNetwork,
}

fn taken_error(errs: &mut FieldErrors, field: String, value: String, what: &str) {
    errs.0.push(FieldError {
        field,
        error_type: FieldErrorType::Invalid,
        value: Some(value),
        detail: format!("provided {what} is already allocated"),
    });
}

impl ServiceAllocator {
    pub fn new(net: ServiceNetwork) -> Self {
        Self { net }
    }

    pub fn network(&self) -> &ServiceNetwork {
        &self.net
    }

    /// Plans `new` (over `old` for an update), claims what it needs that `old` did not hold,
    /// and writes the values into `new`. On error nothing stays claimed.
    pub async fn allocate(
        &self,
        store: &dyn Store,
        owner: Owner,
        old: Option<&Service>,
        new: &mut Service,
    ) -> Result<Holding, AllocError> {
        let plan = plan::plan(&self.net, &owner.namespace, &owner.name, old, new)
            .map_err(AllocError::Invalid)?;
        let old_ips: Vec<IpAddr> = old.map(plan::held_ips).unwrap_or_default();
        let old_ports: Vec<u16> = old.map(plan::held_ports).unwrap_or_default();
        let mut holding = Holding {
            owner: Some(owner.clone()),
            ..Holding::default()
        };
        let result = self
            .claim_plan(store, &owner, &plan, &old_ips, &old_ports, &mut holding)
            .await;
        let (ips, ports, hc) = match result {
            Ok(values) => values,
            Err(e) => {
                self.rollback(store, holding).await;
                return Err(e);
            }
        };
        plan::write(new, &ips, &ports, hc);
        for ip in old_ips.iter().filter(|ip| !ips.contains(ip)) {
            holding.stale.push((Table::ClusterIp, ip.to_string()));
        }
        let kept: HashSet<u16> = ports.iter().copied().chain(hc).collect();
        for port in old_ports.iter().filter(|p| !kept.contains(p)) {
            holding.stale.push((Table::NodePort, port.to_string()));
        }
        Ok(holding)
    }

    async fn claim_plan(
        &self,
        store: &dyn Store,
        owner: &Owner,
        plan: &plan::Plan,
        old_ips: &[IpAddr],
        old_ports: &[u16],
        holding: &mut Holding,
    ) -> Result<(Vec<IpAddr>, Vec<u16>, Option<u16>), AllocError> {
        let mut errs = FieldErrors::default();
        let mut ips = Vec::new();
        let mut taken_ips: Option<HashSet<IpAddr>> = None;
        for (i, slot) in plan.ips.iter().enumerate() {
            match slot {
                IpSlot::Given(ip) if old_ips.contains(ip) => ips.push(*ip),
                IpSlot::Given(ip) => {
                    if !holding
                        .claim(store, Table::ClusterIp, &ip.to_string(), owner)
                        .await?
                    {
                        taken_error(
                            &mut errs,
                            format!("spec.clusterIPs[{i}]"),
                            format!("{:?}", ip.to_string()),
                            "IP",
                        );
                        // Claiming more for a create that fails would only make a concurrent
                        // winner lose too.
                        return Err(AllocError::Invalid(errs));
                    }
                    ips.push(*ip);
                }
                IpSlot::Any(family) => {
                    let ip = self
                        .claim_any_ip(store, owner, *family, &mut taken_ips, holding)
                        .await?;
                    ips.push(ip);
                }
            }
        }
        let mut ports = Vec::new();
        let mut taken_ports: Option<HashSet<u16>> = None;
        let mut mine: HashSet<u16> = HashSet::new();
        let slots = plan.node_ports.iter().map(|s| (true, s));
        let slots = slots.chain(plan.health_check.iter().map(|s| (false, s)));
        let mut hc = None;
        for (i, (is_node_port, slot)) in slots.enumerate() {
            let port = match slot {
                PortSlot::Given(p) if old_ports.contains(p) || mine.contains(p) => Some(*p),
                PortSlot::Given(p) => {
                    if !holding
                        .claim(store, Table::NodePort, &p.to_string(), owner)
                        .await?
                    {
                        let field = if is_node_port {
                            format!("spec.ports[{i}].nodePort")
                        } else {
                            "spec.healthCheckNodePort".to_owned()
                        };
                        taken_error(&mut errs, field, p.to_string(), "port");
                        return Err(AllocError::Invalid(errs));
                    }
                    Some(*p)
                }
                PortSlot::Any => Some(
                    self.claim_any_port(store, owner, &mut taken_ports, &mine, holding)
                        .await?,
                ),
            };
            if let Some(p) = port {
                mine.insert(p);
                if is_node_port {
                    ports.push(p);
                } else {
                    hc = Some(p);
                }
            }
        }
        if !errs.is_empty() {
            return Err(AllocError::Invalid(errs));
        }
        Ok((ips, ports, hc))
    }

    async fn claim_any_ip(
        &self,
        store: &dyn Store,
        owner: &Owner,
        family: Family,
        taken: &mut Option<HashSet<IpAddr>>,
        holding: &mut Holding,
    ) -> Result<IpAddr, AllocError> {
        let Some(cidr) = self.net.cidr_for(family) else {
            return Err(AllocError::Full("serviceIP"));
        };
        if taken.is_none() {
            let reserved: HashSet<IpAddr> = self.net.reserved.iter().map(|r| r.ip).collect();
            for _ in 0..BLIND_PICKS {
                let Some(ip) = range::pick_ip(cidr, &reserved, range::seed(), usize::MAX) else {
                    break;
                };
                if holding
                    .claim(store, Table::ClusterIp, &ip.to_string(), owner)
                    .await?
                {
                    return Ok(ip);
                }
            }
        }
        // Re-read the records when a pick loses a race, but never forever.
        for _ in 0..4 {
            let mut set = match taken.take() {
                Some(set) => set,
                None => records::taken_ips(store).await?,
            };
            set.extend(self.net.reserved.iter().map(|r| r.ip));
            for _ in 0..PICK_ATTEMPTS {
                let Some(ip) = range::pick_ip(cidr, &set, range::seed(), usize::MAX) else {
                    return Err(AllocError::Full("serviceIP"));
                };
                set.insert(ip);
                if holding
                    .claim(store, Table::ClusterIp, &ip.to_string(), owner)
                    .await?
                {
                    *taken = Some(set);
                    return Ok(ip);
                }
            }
        }
        Err(AllocError::Full("serviceIP"))
    }

    async fn claim_any_port(
        &self,
        store: &dyn Store,
        owner: &Owner,
        taken: &mut Option<HashSet<u16>>,
        mine: &HashSet<u16>,
        holding: &mut Holding,
    ) -> Result<u16, AllocError> {
        if taken.is_none() {
            for _ in 0..BLIND_PICKS {
                let Some(port) = range::pick_port(&self.net.node_ports, mine, range::seed()) else {
                    break;
                };
                if holding
                    .claim(store, Table::NodePort, &port.to_string(), owner)
                    .await?
                {
                    return Ok(port);
                }
            }
        }
        for _ in 0..4 {
            let mut set = match taken.take() {
                Some(set) => set,
                None => records::taken_ports(store).await?,
            };
            set.extend(mine);
            for _ in 0..PICK_ATTEMPTS {
                let Some(port) = range::pick_port(&self.net.node_ports, &set, range::seed()) else {
                    return Err(AllocError::Full("nodePort"));
                };
                set.insert(port);
                if holding
                    .claim(store, Table::NodePort, &port.to_string(), owner)
                    .await?
                {
                    *taken = Some(set);
                    return Ok(port);
                }
            }
        }
        Err(AllocError::Full("nodePort"))
    }

    /// The Service write succeeded: release what it held before and no longer does.
    pub async fn commit(&self, store: &dyn Store, holding: Holding) {
        let Some(owner) = holding.owner else { return };
        for (table, value) in &holding.stale {
            records::release(store, *table, value, &owner).await;
        }
    }

    /// The Service write failed: release what this request claimed.
    pub async fn rollback(&self, store: &dyn Store, holding: Holding) {
        for created in &holding.created {
            records::unclaim(store, created).await;
        }
    }

    /// The Service is gone: release everything it held.
    pub async fn release(&self, store: &dyn Store, owner: &Owner, svc: &Service) {
        for ip in plan::held_ips(svc) {
            records::release(store, Table::ClusterIp, &ip.to_string(), owner).await;
        }
        for port in plan::held_ports(svc) {
            records::release(store, Table::NodePort, &port.to_string(), owner).await;
        }
    }
}

/// Upstream-compatible update preparation: values a PUT omits are kept, values the new type no
/// longer needs are dropped (see [`plan::carry_over`]).
pub fn carry_over(old: &Service, new: &mut Service) {
    plan::carry_over(old, new);
}
