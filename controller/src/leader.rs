//! Leader election over a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` does it: one holder at a time renews the Lease; a candidate takes over only once the holder has let it expire (by the candidate's own clock) or released it.
//!
//! Expiry is judged on the local clock from when this candidate last *saw* the Lease change
//! (upstream's `observedTime`), never by comparing `renewTime` with the local clock, so clock
//! skew between machines cannot make two holders. Every write is an optimistic-concurrency
//! update (resourceVersion), so two candidates racing for an expired Lease cannot both win.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::time::Instant;

/// Where the Lease lives and how it is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    pub namespace: String,
    pub name: String,
    /// Who this candidate is (`holderIdentity`): unique per process.
    pub identity: String,
    /// A holder silent this long has lost the Lease (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How often the holder renews and a candidate retries.
    pub retry_period: Duration,
    /// A holder that could not renew for this long steps down (shorter than the duration, so
    /// it stops acting before anyone else may start).
    pub renew_deadline: Duration,
}

impl LeaderConfig {
    /// The Lease `kube-system/skiff-controller`, 15 s duration, renewed every 2 s, with a
    /// fresh identity (`<hostname>_<uuid>`).
    pub fn skiff_controller() -> Self {
        Self {
            namespace: "kube-system".into(),
            name: "skiff-controller".into(),
            identity: default_identity(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(10),
        }
    }
}

/// `<hostname>_<uuid>`, as kube-controller-manager names its candidates.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "skiff".to_owned());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "lease {namespace}/{name}: {source} (check that the API serves coordination.k8s.io/v1 Leases and that these credentials may get, create and update them)"
    )]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error(
        "lost the lease {namespace}/{name} as {identity}: another candidate holds it now, or it could not be renewed within {deadline:?}; the controllers were stopped"
    )]
    Lost {
        namespace: String,
        name: String,
        identity: String,
        deadline: Duration,
    },
}

/// One candidate for a Lease.
pub struct Elector {
    api: Api<Lease>,
    config: LeaderConfig,
    /// The holder and renew time last seen, and when (local clock) they were first seen.
    observed: Option<(Option<String>, Option<String>, Instant)>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaderConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    pub fn config(&self) -> &LeaderConfig {
        &self.config
    }

    fn api_error(&self, source: kube::Error) -> Error {
        Error::Api {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            source,
        }
    }

    fn seconds(d: Duration) -> i32 {
        i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// One attempt: creates the Lease, renews it when held, or takes it over when expired or
    /// released. `Ok(true)` when this candidate holds it afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let existing = match self.api.get_opt(&self.config.name).await {
            Ok(l) => l,
            Err(e) => return Err(self.api_error(e)),
        };
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(Self::seconds(self.config.lease_duration)),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                // Another candidate created it first.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.api_error(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let renewed = spec.renew_time.as_ref().map(|t| t.0.to_string());
        let local_now = Instant::now();
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(h, r, _)| *h != holder || *r != renewed);
        if changed {
            self.observed = Some((holder.clone(), renewed, local_now));
        }
        let ours = holder.as_deref() == Some(self.config.identity.as_str());
        if let Some(other) = holder.as_deref()
            && !ours
        {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.config.lease_duration, Duration::from_secs);
            let seen = self.observed.as_ref().map_or(local_now, |(_, _, t)| *t);
            if local_now.duration_since(seen) < duration {
                tracing::debug!(holder = other, "lease held by another candidate");
                return Ok(false);
            }
            tracing::info!(
                previous = other,
                "the lease holder has not renewed within the lease duration: taking over"
            );
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(Self::seconds(self.config.lease_duration)),
            acquire_time: if ours {
                spec.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
            ..spec
        });
        // `replace` carries the resourceVersion read above: a concurrent writer makes it 409.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.api_error(e)),
        }
    }

    /// Gives the Lease up (holder cleared, 1 s duration) so a standby takes over at once, as
    /// upstream's `ReleaseOnCancel`. Does nothing when another candidate holds it.
    pub async fn release(&mut self) -> Result<(), Error> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        lease.spec = Some(spec);
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
            .map_err(|e| self.api_error(e))?;
        Ok(())
    }

    /// Waits to become leader (retrying every `retry_period`), then runs `work` while renewing.
    /// `work` gets a future that resolves when it must stop. Returns `Ok` after `shutdown`
    /// (the Lease released) or when `work` ends by itself, and [`Error::Lost`] when the Lease
    /// was lost (the work stopped first). `on_leading` is told each change of leadership.
    pub async fn run<W, Fut>(
        mut self,
        shutdown: impl Future<Output = ()>,
        on_leading: impl Fn(bool),
        work: W,
    ) -> Result<(), Error>
    where
        W: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
        Fut: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        let name = format!("{}/{}", self.config.namespace, self.config.name);
        let identity = self.config.identity.clone();
        tracing::info!(lease = %name, %identity, "waiting to become leader");
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "leader election attempt failed, retrying"),
            }
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
        }
        tracing::info!(lease = %name, %identity, "became leader");
        on_leading(true);
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let stop = Box::pin(async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        });
        let work = work(stop);
        tokio::pin!(work);
        let mut last_renew = Instant::now();
        enum End {
            Shutdown,
            WorkEnded,
            Lost,
        }
        let end = loop {
            tokio::select! {
                () = &mut work => break End::WorkEnded,
                () = &mut shutdown => break End::Shutdown,
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
            let budget = self
                .config
                .renew_deadline
                .saturating_sub(last_renew.elapsed());
            match tokio::time::timeout(budget, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => last_renew = Instant::now(),
                Ok(Ok(false)) => break End::Lost,
                Ok(Err(error)) => tracing::warn!(%error, "could not renew the lease"),
                Err(_) => tracing::warn!("renewing the lease timed out"),
            }
            if last_renew.elapsed() >= self.config.renew_deadline {
                break End::Lost;
            }
        };
        let _ = stop_tx.send(true);
        if !matches!(end, End::WorkEnded) {
            work.await;
        }
        on_leading(false);
        match end {
            End::Lost => Err(Error::Lost {
                namespace: self.config.namespace.clone(),
                name: self.config.name.clone(),
                identity,
                deadline: self.config.renew_deadline,
            }),
            End::Shutdown | End::WorkEnded => {
                if let Err(error) = self.release().await {
                    tracing::warn!(%error, "could not release the lease; a standby takes over once it expires");
                } else {
                    tracing::info!(lease = %name, %identity, "released the lease");
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_upstreams() {
        let c = LeaderConfig::skiff_controller();
        assert_eq!(
            (c.namespace.as_str(), c.name.as_str()),
            ("kube-system", "skiff-controller")
        );
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert_eq!(c.retry_period, Duration::from_secs(2));
        assert!(c.renew_deadline < c.lease_duration);
        assert_ne!(c.identity, LeaderConfig::skiff_controller().identity);
        assert_eq!(Elector::seconds(Duration::from_millis(10)), 1);
        assert_eq!(Elector::seconds(Duration::from_secs(15)), 15);
    }
}
