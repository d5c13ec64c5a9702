/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * skiff socket load balancer: the map ABI shared by the BPF programs (sock_lb.c) and the Rust
 * loader (ebpf/src/abi.rs). Every struct here has a byte-for-byte twin in abi.rs: change both
 * together, and keep explicit padding fields so that keys built on the BPF stack are fully
 * initialised (the verifier rejects map keys with uninitialised bytes, and hash maps compare
 * padding too).
 *
 * Addresses are always 16 bytes in network order; IPv4 is stored v4-mapped (::ffff:a.b.c.d) so a
 * dual-stack IPv6 socket connecting to ::ffff:10.96.0.10 finds the same service as connect4.
 * Ports are network order, in the low 16 bits as the kernel's bpf_sock_addr stores them.
 */
#ifndef SKIFF_LB_H
#define SKIFF_LB_H

#include <linux/types.h>

/* services: frontend (virtual address) -> the backend set it currently points to. */
struct svc_key {
	__u32 addr[4];
	__u16 port;  /* network order */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

#define SVC_F_AFFINITY 0x1 /* sessionAffinity: ClientIP, per network namespace */

struct svc_value {
	__u32 slot;    /* stable service slot: index into `counters`, part of the affinity key */
	__u32 set;     /* backend set: `backends` keys {set, 0..count-1}; a new one on every update */
	__u16 count;   /* number of backends; 0 = reject (connect fails with EPERM) */
	__u8 flags;    /* SVC_F_* */
	__u8 pad;
	__u32 affinity_timeout; /* seconds since the client's last connection */
};

/* backends: {backend set, index} -> backend address. */
struct backend_key {
	__u32 set;
	__u32 index;
};

struct backend_value {
	__u32 addr[4];
	__u16 port; /* network order */
	__u16 pad;
};

/* affinity (LRU): {client network namespace, service slot} -> chosen backend. */
struct affinity_key {
	__u64 netns_cookie;
	__u32 slot;
	__u32 pad;
};

struct affinity_value {
	__u64 last_used_ns; /* bpf_ktime_get_ns() of the last connection */
	__u32 set;          /* backend set the index refers to */
	__u32 index;
	__u32 addr[4];      /* the backend itself, to find it again in a newer set */
	__u16 port;
	__u16 pad;
	__u32 pad2;
};

/* affinity_members: {backend set, backend} -> its index in that set. Written only for
 * services with affinity, so a client keeps its backend across updates that keep it. */
struct member_key {
	__u32 set;
	__u32 addr[4];
	__u16 port;
	__u16 pad;
};

/* rev_nat (LRU): {socket, backend address} -> the virtual address the socket asked for. */
struct revnat_key {
	__u64 cookie; /* bpf_get_socket_cookie() */
	__u32 addr[4];
	__u16 port;
	__u16 pad;
	__u32 pad2;
};

struct revnat_value {
	__u32 addr[4];
	__u16 port;
	__u16 pad;
};

/* counters (per-CPU array indexed by service slot). */
struct svc_counters {
	__u64 connects;  /* connect() calls translated to a backend (TCP and connected UDP) */
	__u64 datagrams; /* unconnected UDP sendmsg() calls translated */
	__u64 rejected;  /* connect/sendmsg refused because the service had no backend */
};

#endif
