//! What the controllers are configured with (the CLI flags of `CONTRACT.md` they need).

/// Controller settings; `Default` is the contract's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `--lb-pool`: addresses the built-in load balancer hands to LoadBalancer Services.
    pub lb_pool: String,
    /// Node heartbeat grace and monitor period.
    pub node_lifecycle: crate::node_lifecycle::Config,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            lb_pool: "172.18.255.0/24".into(),
            node_lifecycle: crate::node_lifecycle::Config::default(),
        }
    }
}
