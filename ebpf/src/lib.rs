//! The kernel ABI: BPF programs in C, their loader and typed maps. Knows nothing of Services.
//!
//! Its vocabulary is virtual addresses ([`Vip`]), service slots ([`ServiceSlot`]) and backend
//! addresses ([`BackendAddr`]). [`SockLb`] is socket-level load balancing
//! (`bpf/sock_lb.c`): cgroup `connect4/6`, `sendmsg4/6` translate a virtual address to a
//! backend once per connection (or per unconnected UDP datagram), `recvmsg4/6` and
//! `getpeername4/6` show the virtual address back to the application. Attached at the cgroup
//! v2 root, the programs act only on sockets whose network namespace was allowed with
//! [`SockLb::allow_netns`] (cookies from [`netns_cookie`]).
//!
//! [`NodePortLb`] is the north-south load balancer (`bpf/tc_nodeport.c`): a tc classifier at
//! ingress of interfaces named inside a given network namespace, translating packets from
//! outside the node to NodePorts, LoadBalancer IPs and externalIPs (Maglev backends from
//! [`maglev`], DNAT, SNAT or the client address kept), and their replies back.
//!
//! Both can pin their maps in a BPF file system (`pin_dir`) and adopt them on the next load,
//! so a restarted process keeps the state of established connections; the programs are
//! attached through links this process owns, so they are detached when it dies. On a clean
//! stop the owner may hand its links over (`hand_over`: pinned beside the maps, the programs
//! keep translating while no process runs) to the next process, which releases them
//! ([`release_links`]) once its own programs are attached. [`remove_pins`] removes what a pin
//! directory holds, handed-over links included.
//!
//! What a client sees: a connect to a virtual address goes to a backend chosen at random (or
//! its affinity backend), and getpeername()/recvfrom() report the virtual address. A service
//! with zero backends fails connect() and sendto() at once, without a packet, with
//! `ECONNREFUSED` on Linux 5.18+ (as kube-proxy's REJECT rule gives a TCP client) and `EPERM`
//! on older kernels. A virtual address that is not programmed is left alone: the node's
//! routes decide (skiff installs unreachable routes for the service CIDRs).

mod abi;
mod cgroup;
mod error;
mod handover;
pub mod maglev;
mod netns;
mod nodeport;
mod nodeport_abi;
mod pins;
mod sets;
mod sock_lb;

pub use cgroup::cgroup_v2_root;
pub use error::EbpfError;
pub use handover::release_links;
pub use netns::{current_netns_cookie, netns_cookie, netns_cookie_fd, socket_netns_cookie};
pub use nodeport::{
    FrontendOptions, NodePortCounters, NodePortLb, NodePortOptions, detach_leftover_filters,
};
pub use pins::{check_bpffs, remove_pins};
pub use sock_lb::{
    BackendAddr, Protocol, ServiceOptions, ServiceSlot, SlotCounters, SockLb, SockLbOptions, Vip,
};
