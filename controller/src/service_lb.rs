//! The built-in load balancer (`service-controller`, like k3s ServiceLB / MetalLB): LoadBalancer Services of no class or skiff's class get an address from `--lb-pool` in `status.loadBalancer.ingress`, released when the type changes or the Service goes.
//!
//! kube-runtime style: a `Controller` over Services (watcher → reflector store) calls the
//! idempotent [`reconcile`] one Service at a time (concurrency 1, so two decisions never race).
//! Which addresses are taken is derived from the statuses in the store, plus the ones this
//! process wrote that the store has not shown yet: after a restart the statuses are the
//! record, so nothing is handed out twice.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use serde_json::json;

use crate::events::{EventType, Recorder};

/// Upstream's name for the component that provisions load balancers.
pub const COMPONENT: &str = "service-controller";
/// The `spec.loadBalancerClass` skiff serves (Services with no class are served too).
pub const LOAD_BALANCER_CLASS: &str = "skiff.dev/load-balancer";
/// How soon a Service that could not get an address is tried again.
const RETRY: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --lb-pool {0:?}: expected a CIDR such as 172.18.255.0/24")]
pub struct PoolError(pub String);

/// The address pool (`--lb-pool`): a CIDR without its network and (IPv4) broadcast address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbPool {
    base: u128,
    prefix: u8,
    v6: bool,
}

impl LbPool {
    pub fn parse(s: &str) -> Result<Self, PoolError> {
        let bad = || PoolError(s.to_owned());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let (n, bits, v6) = match addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32, false),
            IpAddr::V6(a) => (u128::from(a), 128, true),
        };
        if prefix > bits || prefix == 0 {
            return Err(bad());
        }
        let mask = u128::MAX << (bits - prefix);
        Ok(Self {
            base: n & mask,
            prefix,
            v6,
        })
    }

    fn host_bits(&self) -> u8 {
        (if self.v6 { 128 } else { 32 }) - self.prefix
    }

    fn ip(&self, n: u128) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(n))
        } else {
            IpAddr::V4(Ipv4Addr::from(n as u32))
        }
    }

    /// Whether `ip` is a usable address of the pool.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let n = match (ip, self.v6) {
            (IpAddr::V4(a), false) => u128::from(u32::from(*a)),
            (IpAddr::V6(a), true) => u128::from(*a),
            _ => return false,
        };
        let hb = self.host_bits();
        let same_net = hb >= 128 || n >> hb == self.base >> hb;
        let offset = n.wrapping_sub(self.base);
        same_net && self.usable(offset)
    }

    fn usable(&self, offset: u128) -> bool {
        let size = 1u128 << self.host_bits().min(64);
        if size <= 2 {
            return true; // a /31 or /32 has no network or broadcast address to skip
        }
        offset != 0 && (self.v6 || offset != size - 1)
    }

    /// The usable addresses, lowest first (capped at 2^16, plenty for a node-local pool).
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let size = 1u128 << self.host_bits().min(16);
        (0..size)
            .filter(|o| self.usable(*o))
            .map(|o| self.ip(self.base + o))
    }
}

impl fmt::Display for LbPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip(self.base), self.prefix)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the status of {service}: {source}")]
    Status {
        service: String,
        source: kube::Error,
    },
}

/// What [`reconcile`] shares.
pub struct Ctx {
    client: kube::Client,
    pool: LbPool,
    store: Store<Service>,
    recorder: Recorder,
    /// Addresses written by this process, by Service uid, until the store shows them.
    written: Mutex<HashMap<String, IpAddr>>,
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

fn full_name(svc: &Service) -> String {
    format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or(""),
        svc.metadata.name.as_deref().unwrap_or("")
    )
}

fn ingress_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok()))
        .collect()
}

/// Whether skiff serves this Service's class (none, or skiff's).
fn our_class(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.load_balancer_class.as_deref())
        .is_none_or(|c| c == LOAD_BALANCER_CLASS)
}

fn wants_address(svc: &Service) -> bool {
    svc.metadata.deletion_timestamp.is_none()
        && svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        && our_class(svc)
}

/// Pool addresses held by Services other than `uid`, and by whom.
fn taken(ctx: &Ctx, uid: &str) -> HashMap<IpAddr, String> {
    let services = ctx.store.state();
    let mut taken = HashMap::new();
    for other in &services {
        if other.metadata.uid.as_deref() == Some(uid) {
            continue;
        }
        for ip in ingress_ips(other)
            .into_iter()
            .filter(|ip| ctx.pool.contains(ip))
        {
            taken.insert(ip, full_name(other));
        }
    }
    let mut written = ctx.written.lock().unwrap_or_else(|e| e.into_inner());
    // Forget what the store now shows, or whose Service is gone.
    written.retain(|w_uid, ip| {
        services.iter().any(|s| {
            s.metadata.uid.as_deref() == Some(w_uid.as_str()) && !ingress_ips(s).contains(ip)
        })
    });
    for (w_uid, ip) in written.iter() {
        if w_uid != uid {
            taken
                .entry(*ip)
                .or_insert_with(|| "another Service".to_owned());
        }
    }
    taken
}

/// Decides the address a Service should have: `Err(message)` when it cannot get one.
fn choose(ctx: &Ctx, svc: &Service, uid: &str) -> Result<IpAddr, String> {
    let taken = taken(ctx, uid);
    let name = full_name(svc);
    let requested = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
        .filter(|s| !s.is_empty());
    if let Some(requested) = requested {
        let ip: IpAddr = requested.parse().map_err(|_| {
            format!("Failed to allocate IP for {name:?}: {requested:?} is not an IP address")
        })?;
        if !ctx.pool.contains(&ip) {
            return Err(format!(
                "Failed to allocate IP for {name:?}: {ip} is not in the pool {}",
                ctx.pool
            ));
        }
        if let Some(holder) = taken.get(&ip) {
            return Err(format!(
                "Failed to allocate IP for {name:?}: {ip} is already in use by {holder}"
            ));
        }
        return Ok(ip);
    }
    let current = ingress_ips(svc)
        .into_iter()
        .find(|ip| ctx.pool.contains(ip) && !taken.contains_key(ip));
    if let Some(ip) = current {
        return Ok(ip);
    }
    ctx.pool
        .addresses()
        .find(|ip| !taken.contains_key(ip))
        .ok_or_else(|| {
            format!(
                "Failed to allocate IP for {name:?}: no available IPs in the pool {}",
                ctx.pool
            )
        })
}

async fn write_ingress(ctx: &Ctx, svc: &Service, ingress: serde_json::Value) -> Result<(), Error> {
    let api: Api<Service> = Api::namespaced(
        ctx.client.clone(),
        svc.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
    api.patch_status(
        svc.metadata.name.as_deref().unwrap_or(""),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| Error::Status {
        service: full_name(svc),
        source,
    })?;
    Ok(())
}

/// Gives a LoadBalancer Service of skiff's class its pool address, or takes it back from a
/// Service that no longer is one. Idempotent: a Service already right is left alone.
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // Decisions need every Service's status: never decide on a half-filled store.
    if ctx.store.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(RETRY));
    }
    let uid = svc.metadata.uid.clone().unwrap_or_default();
    let ours: Vec<IpAddr> = ingress_ips(&svc)
        .into_iter()
        .filter(|ip| ctx.pool.contains(ip))
        .collect();
    if !wants_address(&svc) {
        ctx.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
        let type_changed =
            svc.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("LoadBalancer");
        if !ours.is_empty()
            && (type_changed || our_class(&svc))
            && svc.metadata.deletion_timestamp.is_none()
        {
            write_ingress(&ctx, &svc, json!([])).await?;
            ctx.recorder
                .publish(
                    &*svc,
                    EventType::Normal,
                    "DeletedLoadBalancer",
                    "Deleted load balancer",
                )
                .await;
        }
        return Ok(Action::await_change());
    }
    let ip = match choose(&ctx, &svc, &uid) {
        Ok(ip) => ip,
        Err(message) => {
            tracing::info!(service = full_name(&svc), %message, "no load-balancer address");
            ctx.recorder
                .publish(&*svc, EventType::Warning, "AllocationFailed", &message)
                .await;
            return Ok(Action::requeue(RETRY));
        }
    };
    if ingress_ips(&svc) == [ip] {
        return Ok(Action::await_change());
    }
    ctx.recorder
        .publish(
            &*svc,
            EventType::Normal,
            "EnsuringLoadBalancer",
            "Ensuring load balancer",
        )
        .await;
    ctx.written
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(uid, ip);
    write_ingress(&ctx, &svc, json!([{"ip": ip.to_string(), "ipMode": "VIP"}])).await?;
    tracing::info!(service = full_name(&svc), %ip, "load-balancer address assigned");
    ctx.recorder
        .publish(
            &*svc,
            EventType::Normal,
            "IPAllocated",
            &format!("Assigned IP [\"{ip}\"]"),
        )
        .await;
    ctx.recorder
        .publish(
            &*svc,
            EventType::Normal,
            "EnsuredLoadBalancer",
            "Ensured load balancer",
        )
        .await;
    Ok(Action::await_change())
}

fn error_policy(svc: Arc<Service>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(service = full_name(&svc), %error, "load-balancer reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the load-balancer controller until the future is dropped.
pub async fn run(client: kube::Client, pool: LbPool) {
    let api: Api<Service> = Api::all(client.clone());
    let controller = Controller::new(api, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(1));
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), COMPONENT),
        client,
        pool,
        store: controller.store(),
        written: Mutex::new(HashMap::new()),
    });
    tracing::info!(%pool, "load-balancer controller started");
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "load-balancer controller");
            }
        })
        .await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pool_addresses_skip_network_and_broadcast() {
        let pool = LbPool::parse("172.18.255.0/24").unwrap();
        let all: Vec<IpAddr> = pool.addresses().collect();
        assert_eq!(all.len(), 254);
        assert_eq!(all[0], "172.18.255.1".parse::<IpAddr>().unwrap());
        assert_eq!(all[253], "172.18.255.254".parse::<IpAddr>().unwrap());
        assert!(pool.contains(&"172.18.255.7".parse().unwrap()));
        assert!(!pool.contains(&"172.18.255.0".parse().unwrap()));
        assert!(!pool.contains(&"172.18.255.255".parse().unwrap()));
        assert!(!pool.contains(&"172.18.254.7".parse().unwrap()));
        assert!(!pool.contains(&"fd00::1".parse().unwrap()));
        assert_eq!(pool.to_string(), "172.18.255.0/24");
        assert!(LbPool::parse("172.18.255.0").is_err());
        assert!(LbPool::parse("172.18.255.0/33").is_err());
    }

    #[test]
    fn ipv6_pool() {
        let pool = LbPool::parse("fd00:18::/120").unwrap();
        assert_eq!(pool.addresses().count(), 255);
        assert!(pool.contains(&"fd00:18::ff".parse().unwrap()));
    }

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn classes_and_types() {
        let lb = svc(json!({"metadata": {"name": "a"}, "spec": {"type": "LoadBalancer"}}));
        assert!(wants_address(&lb));
        let other = svc(
            json!({"metadata": {"name": "a"}, "spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"}}),
        );
        assert!(!wants_address(&other));
        let mine = svc(
            json!({"metadata": {"name": "a"}, "spec": {"type": "LoadBalancer", "loadBalancerClass": LOAD_BALANCER_CLASS}}),
        );
        assert!(wants_address(&mine));
        let cip = svc(json!({"metadata": {"name": "a"}, "spec": {"type": "ClusterIP"}}));
        assert!(!wants_address(&cip));
    }
}
