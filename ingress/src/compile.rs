//! Model → [`RouteTable`]: class selection, merging of Ingresses per host (oldest first, then
//! namespace/name), backend resolution through EndpointSlices to ready pod IP:targetPort.
//! Pure: no I/O, so every routing rule is unit-tested here.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::balance::Endpoint;
use crate::class::ClassSelector;
use crate::model::{
    BackendProtocol, BackendRef, IngressInfo, Key, Model, PathType, Problem, SliceInfo,
};
use crate::table::{Backend, Canary, HostRoutes, Route, RouteTable};

/// Controller-wide routing settings.
#[derive(Debug, Clone, Default)]
pub struct RoutingConfig {
    pub classes: ClassSelector,
    /// `--default-backend`: where requests no rule matches go (else 404).
    pub default_backend: Option<BackendRef>,
}

/// The result of one compile.
#[derive(Debug)]
pub struct Compiled {
    pub table: RouteTable,
    /// Our Ingresses in merge order (the ones that get a status).
    pub ours: Vec<Key>,
    /// Invalid or shadowed parts of our Ingresses.
    pub problems: Vec<Problem>,
}

/// Our Ingresses, oldest first, then by namespace/name.
pub fn our_ingresses<'m>(model: &'m Model, cfg: &RoutingConfig) -> Vec<&'m IngressInfo> {
    let mut ours: Vec<&IngressInfo> = model
        .ingresses
        .values()
        .filter(|i| cfg.classes.is_ours(i, &model.classes))
        .collect();
    ours.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    ours
}

/// Builds the next table; `prev` lends its endpoints so their load estimates carry over.
pub fn compile(model: &Model, cfg: &RoutingConfig, prev: Option<&RouteTable>) -> Compiled {
    let ours = our_ingresses(model, cfg);
    let mut b = Builder {
        model,
        slices: index_slices(model),
        prev,
        backends: HashMap::new(),
        table: RouteTable::default(),
        problems: Vec::new(),
    };
    // Canaries after every main Ingress, whatever their age: they attach to main routes.
    for ing in ours.iter().filter(|i| i.canary_weight.is_none()) {
        b.problems.extend(ing.problems.iter().cloned());
        b.add_ingress(ing);
    }
    for ing in ours.iter().filter(|i| i.canary_weight.is_some()) {
        b.problems.extend(ing.problems.iter().cloned());
        b.add_canary(ing);
    }
    if b.table.fallback.is_none()
        && let Some(d) = &cfg.default_backend
    {
        let backend = b.backend(d);
        b.table.fallback = Some(b.route(None, backend, false));
    }
    Compiled {
        table: b.table,
        ours: ours.iter().map(|i| i.key.clone()).collect(),
        problems: b.problems,
    }
}

fn index_slices(model: &Model) -> HashMap<(&str, &str), Vec<&SliceInfo>> {
    let mut idx: HashMap<(&str, &str), Vec<&SliceInfo>> = HashMap::new();
    for s in model.slices.values() {
        idx.entry((s.key.namespace.as_str(), s.service.as_str()))
            .or_default()
            .push(s);
    }
    idx
}

struct Builder<'m> {
    model: &'m Model,
    slices: HashMap<(&'m str, &'m str), Vec<&'m SliceInfo>>,
    prev: Option<&'m RouteTable>,
    backends: HashMap<BackendRef, Arc<Backend>>,
    table: RouteTable,
    problems: Vec<Problem>,
}

impl Builder<'_> {
    fn add_ingress(&mut self, ing: &IngressInfo) {
        let mut has_host_rules = false;
        for (i, rule) in ing.rules.iter().enumerate() {
            has_host_rules |= rule.host.is_some();
            let redirect = redirect_for(ing, rule.host.as_deref());
            for (j, p) in rule.paths.iter().enumerate() {
                let backend = self.backend(&p.backend);
                let route = self.route(Some(ing), backend, redirect);
                let host = host_routes(&mut self.table, rule.host.as_deref());
                let (map, key) = match p.path_type {
                    PathType::Exact => (&mut host.exact, p.path.as_str()),
                    PathType::Prefix | PathType::ImplementationSpecific => {
                        (&mut host.prefix, p.path.trim_end_matches('/'))
                    }
                };
                match map.get(key) {
                    // The older Ingress (or earlier path) keeps it: deterministic merging.
                    Some(existing) => {
                        if existing.ingress.as_ref() != Some(&ing.key) {
                            let owner = existing
                                .ingress
                                .as_ref()
                                .map_or_else(String::new, ToString::to_string);
                            self.problems.push(Problem {
                                object: ing.key.clone(),
                                field: format!("spec.rules[{i}].http.paths[{j}]"),
                                message: format!(
                                    "{:?} path {:?} on host {:?} is already served by Ingress {owner}",
                                    p.path_type,
                                    p.path,
                                    rule.host.as_deref().unwrap_or("*")
                                ),
                            });
                        }
                    }
                    None => {
                        map.insert(key.into(), route);
                        self.table.rule_count += 1;
                    }
                }
            }
        }
        let Some(default) = &ing.default_backend else {
            return;
        };
        let backend = self.backend(default);
        // A defaultBackend serves the unmatched paths of this Ingress's hosts...
        let mut hosts: Vec<&str> = ing.rules.iter().filter_map(|r| r.host.as_deref()).collect();
        hosts.sort_unstable();
        hosts.dedup();
        for h in hosts {
            let route = self.route(Some(ing), backend.clone(), redirect_for(ing, Some(h)));
            host_routes(&mut self.table, Some(h))
                .default
                .get_or_insert(route);
        }
        // ...and, from an Ingress without host rules, every request nothing else matches.
        if !has_host_rules && self.table.fallback.is_none() {
            self.table.fallback = Some(self.route(Some(ing), backend, false));
        }
    }

    /// Attaches a canary Ingress's paths to the main routes with the same host, path and type.
    fn add_canary(&mut self, ing: &IngressInfo) {
        let weight = ing.canary_weight.unwrap_or(0);
        for (i, rule) in ing.rules.iter().enumerate() {
            for (j, p) in rule.paths.iter().enumerate() {
                let backend = self.backend(&p.backend);
                let host = host_routes(&mut self.table, rule.host.as_deref());
                let (map, key) = match p.path_type {
                    PathType::Exact => (&mut host.exact, p.path.as_str()),
                    PathType::Prefix | PathType::ImplementationSpecific => {
                        (&mut host.prefix, p.path.trim_end_matches('/'))
                    }
                };
                let Some(main) = map.get_mut(key) else {
                    self.problems.push(Problem {
                        object: ing.key.clone(),
                        field: format!("spec.rules[{i}].http.paths[{j}]"),
                        message: format!(
                            "canary path {:?} on host {:?} has no main Ingress with the same path; ignored",
                            p.path,
                            rule.host.as_deref().unwrap_or("*")
                        ),
                    });
                    continue;
                };
                if main.canary.is_some() {
                    self.problems.push(Problem {
                        object: ing.key.clone(),
                        field: format!("spec.rules[{i}].http.paths[{j}]"),
                        message: format!("path {:?} already has a canary; ignored", p.path),
                    });
                    continue;
                }
                let mut with_canary = (**main).clone();
                with_canary.canary = Some(Canary {
                    ingress: ing.key.clone(),
                    backend,
                    weight,
                });
                *main = Arc::new(with_canary);
            }
        }
    }

    /// A route of `ing` (or of the controller-wide default), sharing request counters with
    /// every route of the same Ingress and backend, in this table and the previous one.
    fn route(
        &mut self,
        ing: Option<&IngressInfo>,
        backend: Arc<Backend>,
        redirect_https: bool,
    ) -> Arc<Route> {
        let key = (ing.map(|i| i.key.clone()), backend.name.clone());
        let stats = match self.table.stats.get(&key) {
            Some(s) => s.clone(),
            None => {
                let s = self
                    .prev
                    .and_then(|p| p.stats.get(&key).cloned())
                    .unwrap_or_default();
                self.table.stats.insert(key, s.clone());
                s
            }
        };
        let protocol = ing.map(|i| i.backend_protocol).unwrap_or_default();
        self.table.tls_upstreams |= protocol == BackendProtocol::Https;
        Arc::new(Route {
            ingress: ing.map(|i| i.key.clone()),
            backend,
            redirect_https,
            protocol,
            max_body: ing.and_then(|i| i.max_body),
            stats,
            canary: None,
        })
    }

    /// Resolves a Service port to ready endpoints, once per distinct backend.
    fn backend(&mut self, r: &BackendRef) -> Arc<Backend> {
        if let Some(b) = self.backends.get(r) {
            return b.clone();
        }
        let b = Arc::new(match self.resolve(r) {
            Ok(addrs) => Backend {
                name: r.clone(),
                endpoints: addrs
                    .into_iter()
                    .map(|a| {
                        let prev = self.prev.and_then(|p| p.endpoints.get(&a));
                        let ep = prev.cloned().unwrap_or_else(|| Arc::new(Endpoint::new(a)));
                        self.table.endpoints.insert(a, ep.clone());
                        ep
                    })
                    .collect(),
                unavailable: None,
            },
            Err(why) => Backend {
                name: r.clone(),
                endpoints: Vec::new(),
                unavailable: Some(why),
            },
        });
        self.backends.insert(r.clone(), b.clone());
        b
    }

    fn resolve(&self, r: &BackendRef) -> Result<Vec<SocketAddr>, String> {
        let svc = self
            .model
            .services
            .get(&r.service)
            .ok_or_else(|| format!("service {} does not exist", r.service))?;
        if svc.external_name {
            return Err(format!(
                "service {} is of type ExternalName, which the ingress does not proxy",
                r.service
            ));
        }
        let port = svc
            .port(&r.port)
            .ok_or_else(|| format!("service {} has no TCP port {}", r.service, r.port))?;
        let mut addrs: Vec<SocketAddr> = self
            .slices
            .get(&(r.service.namespace.as_str(), r.service.name.as_str()))
            .into_iter()
            .flatten()
            .flat_map(|s| {
                // The slice's port of the same name carries the resolved targetPort.
                let target = s.ports.iter().find(|p| p.name == port.name).map(|p| p.port);
                s.ready
                    .iter()
                    .filter_map(move |ip| Some(SocketAddr::new(*ip, target?)))
            })
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(format!(
                "service {} port {} has no ready endpoints",
                r.service, r.port
            ));
        }
        Ok(addrs)
    }
}

fn host_routes<'t>(table: &'t mut RouteTable, host: Option<&str>) -> &'t mut HostRoutes {
    match host {
        None => &mut table.any_host,
        Some(h) => match h.strip_prefix("*.") {
            Some(suffix) => table.wildcards.entry(suffix.into()).or_default(),
            None => table.hosts.entry(h.into()).or_default(),
        },
    }
}

/// Whether plain-HTTP requests for `host` under this Ingress redirect to HTTPS: the host is
/// one of its TLS hosts (directly or through a wildcard TLS host) and redirect is not off.
fn redirect_for(ing: &IngressInfo, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    ing.ssl_redirect
        && ing.tls.iter().flat_map(|t| &t.hosts).any(|t| {
            t == host
                || t.strip_prefix("*.").is_some_and(|suffix| {
                    host.split_once('.').is_some_and(|(_, rest)| rest == suffix)
                })
        })
}

/// For tests and tools: a model's table from scratch.
pub fn compile_fresh(model: &Model, cfg: &RoutingConfig) -> Compiled {
    compile(model, cfg, None)
}

/// Problems grouped per Ingress (for Events).
pub fn problems_by_object(problems: &[Problem]) -> BTreeMap<&Key, Vec<&Problem>> {
    let mut m: BTreeMap<&Key, Vec<&Problem>> = BTreeMap::new();
    for p in problems {
        m.entry(&p.object).or_default().push(p);
    }
    m
}
