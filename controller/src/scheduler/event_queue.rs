//! The scheduler's Events, posted off the critical path: a bounded queue drained by one task with a few posts in flight. A full queue drops the Event (client-go's broadcaster drops past 1,000 queued too): an Event is information, and binding must never wait for one.

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc;

use crate::events::{EventType, Recorder};

/// Events waiting to be posted before new ones are dropped (client-go's `maxQueuedEvents`).
pub const MAX_QUEUED: usize = 1_000;
/// Event posts in flight at once. Few on purpose: they compete with bindings for the API
/// server, and nothing waits for them.
const IN_FLIGHT: usize = 4;

struct Job {
    pod: Arc<Pod>,
    type_: EventType,
    reason: &'static str,
    message: String,
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct EventQueue {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for EventQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventQueue")
            .field("queued", &(MAX_QUEUED - self.tx.capacity()))
            .finish()
    }
}

impl EventQueue {
    /// The queue and the future that posts its Events (run it for as long as the queue lives).
    pub fn new(recorder: Recorder) -> (Self, impl Future<Output = ()>) {
        let (tx, mut rx) = mpsc::channel::<Job>(MAX_QUEUED);
        let drain = async move {
            use futures::StreamExt as _;
            futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
                .for_each_concurrent(IN_FLIGHT, |job| {
                    let recorder = recorder.clone();
                    async move {
                        recorder
                            .publish(&*job.pod, job.type_, job.reason, &job.message)
                            .await;
                    }
                })
                .await;
        };
        (Self { tx }, drain)
    }

    /// Queues an Event about `pod`; returns at once. `false` when the queue was full and the
    /// Event was dropped.
    pub fn publish(
        &self,
        pod: Arc<Pod>,
        type_: EventType,
        reason: &'static str,
        message: String,
    ) -> bool {
        let queued = self
            .tx
            .try_send(Job {
                pod,
                type_,
                reason,
                message,
            })
            .is_ok();
        if !queued {
            tracing::debug!(reason, "event queue full: event dropped");
        }
        queued
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_drops_instead_of_waiting() {
        // A client for an address nothing listens on: the drain never runs here anyway.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let (queue, _drain) = EventQueue::new(Recorder::new(client, "test"));
        let pod = Arc::new(Pod::default());
        for _ in 0..MAX_QUEUED {
            assert!(queue.publish(pod.clone(), EventType::Normal, "Scheduled", "m".into()));
        }
        assert!(!queue.publish(pod, EventType::Normal, "Scheduled", "m".into()));
    }
}
