/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * skiff north-south load balancer: the map ABI shared by tc_nodeport.c and the Rust loader
 * (ebpf/src/nodeport_abi.rs). Same rules as skiff_lb.h: every struct has a byte-for-byte twin
 * in Rust, explicit padding so keys built on the BPF stack are fully initialised, addresses 16
 * bytes in network order (IPv4 v4-mapped), ports in network order.
 */
#ifndef SKIFF_NODEPORT_H
#define SKIFF_NODEPORT_H

#include <linux/types.h>

/* ns_services: frontend (NodePort on a node address, LoadBalancer IP, externalIP). */
struct ns_svc_key {
	__u32 addr[4];
	__u16 port;  /* network order */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

#define NS_F_SNAT 0x1     /* externalTrafficPolicy Cluster: source NAT to the node's address */
#define NS_F_AFFINITY 0x2 /* sessionAffinity ClientIP: hash the client address only */

struct ns_svc_value {
	__u32 slot;  /* stable per frontend: counters, UDP membership */
	__u32 set;   /* backends {set, i} and Maglev chunks {set, c}; fresh on every update */
	__u16 count; /* backends in the set; 0 = no endpoint */
	__u8 flags;  /* NS_F_* */
	__u8 pad;
	__u32 maglev_size; /* entries of this set's Maglev table: read by the loader only, to
			    * rebuild tables of adopted (pinned) frontends after a size change */
};

/* ns_backends: {set, index} -> backend. */
struct ns_backend_key {
	__u32 set;
	__u32 index;
};

struct ns_backend_value {
	__u32 addr[4];
	__u16 port;
	__u16 pad;
};

/* ns_maglev: {set, chunk} -> MAGLEV_CHUNK entries of the Maglev lookup table (backend indexes).
 * The table has `maglev_size` entries (a prime, set by the loader), entry h in chunk h / 256. */
#define MAGLEV_CHUNK 256

struct maglev_key {
	__u32 set;
	__u32 chunk;
};

struct maglev_chunk {
	__u16 index[MAGLEV_CHUNK];
};

/* ns_members: {slot, backend} present while the backend serves that UDP frontend, so a UDP
 * flow whose backend went away is balanced again instead of blackholed. */
struct ns_member_key {
	__u32 slot;
	__u32 addr[4];
	__u16 port;
	__u16 pad;
};

/* A flow as a packet carries it. */
struct ns_tuple {
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* ns_flows (LRU): client -> frontend tuple -> where it was sent. */
struct ns_flow {
	__u32 backend[4];
	__u16 backend_port;
	__u16 nat_port;     /* source port after SNAT (network order) */
	__u32 nat_addr[4];  /* source after SNAT; all zero = the client address is kept */
	__u32 slot;
	__u32 pad;
};

/* ns_replies (LRU): backend -> (node address or client) tuple -> the addresses the client
 * expects to see: source = the frontend, destination = the client. */
struct ns_reply {
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u32 slot;
};

/* ns_snat (array, 2): index 0 the IPv4 source for SNAT, 1 the IPv6 one; all zero = none. */
struct ns_snat_addr {
	__u32 addr[4];
};

/* ns_counters (per-CPU array indexed by slot). */
struct ns_counters {
	__u64 packets;    /* client -> backend packets translated */
	__u64 replies;    /* backend -> client packets translated back */
	__u64 flows;      /* new flows balanced (Maglev picks) */
	__u64 no_backend; /* packets to a frontend without a backend (dropped or left to the stack) */
};

#endif
