//! The userspace proxy's own event loop: one thread, started from a thread of the node
//! runtime (so it is in the node's network namespace too), running a current-thread tokio
//! runtime that owns every listener and proxied connection.
//!
//! Why not the node runtime itself: that is a multi-thread runtime, and each connection the
//! proxy spawns or wakes can unpark its other worker (a futex wake and a context switch; with
//! `skiff up` pinned to one CPU, both workers share it) and has its work stolen back and forth.
//! One thread polling epoll and running whatever became ready is the cheapest schedule for an
//! L4 proxy whose per-connection work is a handful of syscalls, and it keeps the proxy's
//! connections out of the queues of the node runtime's other tasks (ingress, health checks).

use std::io;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The running loop; dropping it stops the thread (open connections end with it).
#[derive(Debug)]
pub struct EventLoop {
    handle: Handle,
    _stop: oneshot::Sender<()>,
}

impl EventLoop {
    /// Starts the thread from a blocking thread of `node`, whose threads are in the network
    /// namespace the proxy must make its sockets in, and waits until it runs.
    pub fn start(node: &Handle) -> io::Result<EventLoop> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<Handle>>();
        let (stop, stopped) = oneshot::channel::<()>();
        // A thread inherits the network namespace of the thread that creates it.
        node.spawn_blocking(move || {
            let spawned = std::thread::Builder::new()
                .name("skiff-uproxy".to_owned())
                .spawn({
                    let ready_tx = ready_tx.clone();
                    move || {
                        let runtime = match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => rt,
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                                return;
                            }
                        };
                        let _ = ready_tx.send(Ok(runtime.handle().clone()));
                        // Runs every task spawned on the handle until the engine goes.
                        let _ = runtime.block_on(stopped);
                    }
                });
            if let Err(e) = spawned {
                let _ = ready_tx.send(Err(e));
            }
        });
        let handle = ready_rx
            .recv()
            .map_err(|_| io::Error::other("the proxy event loop thread did not start"))??;
        Ok(EventLoop {
            handle,
            _stop: stop,
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}
