//! `skiff controller`: the controllers and scheduler alone against the API server a kubeconfig names, until SIGINT/SIGTERM. The work is `skiff_controller::standalone::run`; this is flags and signals.

use std::sync::Arc;

use anyhow::Context as _;
use skiff_controller::leader::LeaderConfig;
use skiff_controller::standalone::{self, Standalone};

use crate::cli::ControllerArgs;

pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let client = standalone::client_from_kubeconfig(&args.kubeconfig).await?;
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "cannot serve metrics on {} (choose another --metrics-addr)",
                args.metrics_addr
            )
        })?;
    let mut controllers = skiff_controller::Config {
        lb_pool: args.lb_pool,
        ..skiff_controller::Config::default()
    };
    controllers.node_lifecycle.grace_period = args.node_monitor_grace_period;
    let leader = LeaderConfig::skiff_controller();
    tracing::info!(
        kubeconfig = %args.kubeconfig.display(),
        identity = %leader.identity,
        "skiff controller starting"
    );
    let settings = Standalone {
        controllers,
        leader,
        metrics_listener: Some(listener),
    };
    let metrics = Arc::new(skiff_controller::Metrics::default());
    standalone::run(client, settings, metrics, crate::server::shutdown_signal()).await?;
    tracing::info!("skiff controller stopped");
    Ok(())
}
