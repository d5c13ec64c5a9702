//! Integration and end-to-end tests: one binary, one module per area.

mod agent;
mod apiserver;
mod controllers;
mod dns;
mod durability;
mod images;
mod ingress;
mod kubelet;
mod kubelet_streams;
mod privileged;
mod probes;
mod proxy;
mod proxy_battery;
mod sandbox;
mod storage;
mod up;
mod up_binary;
mod up_ingress;
mod up_ingress_bad;
mod up_ingress_reload;
mod up_nodeport;
mod userspace_proxy;
