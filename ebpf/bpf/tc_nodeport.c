/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * skiff north-south load balancer: one tc classifier attached at ingress of the node
 * namespace's interfaces (the external ones and the pod bridge). Traffic that reaches a
 * NodePort, a LoadBalancer IP or an externalIP from outside never passes a local connect(), so
 * the socket programs (sock_lb.c) cannot see it; this program translates it per packet:
 *
 *  - a packet to a frontend starts (or continues) a flow: the backend is the flow's
 *    remembered one (ns_flows), else a Maglev pick over the frontend's lookup table, so every
 *    node picks the same backend for a flow and a backend change moves few flows;
 *  - it is DNATed to the backend and, for externalTrafficPolicy Cluster (NS_F_SNAT), SNATed to
 *    the node's address with a port free for that backend, so the reply comes back here;
 *    for Local the client address is kept (the backend is on this node and its default
 *    gateway is this node, so the reply passes here too);
 *  - a reply (ns_replies) gets the frontend back as source and the client as destination.
 *
 * Translated packets are sent on with bpf_redirect_neigh() to the interface the FIB names:
 * the stack would drop them otherwise (a reply whose source is now a local address is a
 * martian on input). Everything else - not IPv4/IPv6 TCP/UDP, fragments, IPv6 extension
 * headers, packets to no frontend - is left to the stack untouched (TC_ACT_OK).
 *
 * The frontend, backend and Maglev maps are updated as in sock_lb.c: a new backend set and
 * table under a fresh set id, then the frontend switched in one update, then the old set
 * deleted; a program that misses an entry of the set it read looks the frontend up again.
 */
#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "skiff_nodeport.h"

#define AF_INET 2
#define AF_INET6 10

/* Default sizes; the loader overrides them (NodePortOptions). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ns_svc_key);
	__type(value, struct ns_svc_value);
} ns_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ns_backend_key);
	__type(value, struct ns_backend_value);
} ns_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct maglev_key);
	__type(value, struct maglev_chunk);
} ns_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ns_member_key);
	__type(value, __u8);
} ns_members SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ns_tuple);
	__type(value, struct ns_flow);
} ns_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ns_tuple);
	__type(value, struct ns_reply);
} ns_replies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct ns_snat_addr);
} ns_snat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct ns_counters);
} ns_counters SEC(".maps");

/* Entries of a Maglev table, a prime; set by the loader (.rodata is frozen: the verifier and
 * the JIT see a constant). */
volatile const __u32 maglev_size = 16381;

/* How many SNAT ports are tried for a new flow before it is dropped. */
#define SNAT_TRIES 8

struct pkt {
	struct ns_tuple t;
	__u32 l4_off;
	__u8 v6;
};

enum pick_result {
	PICK_OK = 0,
	PICK_NONE = 1,  /* the frontend has no backend */
	PICK_RETRY = 2, /* the set changed under us: read the frontend again */
};

enum counter { C_PACKETS, C_REPLIES, C_FLOWS, C_NO_BACKEND };

static __always_inline void count(__u32 slot, enum counter which)
{
	struct ns_counters *c = bpf_map_lookup_elem(&ns_counters, &slot);

	if (!c)
		return;
	/* per-CPU values: a plain increment cannot race */
	switch (which) {
	case C_PACKETS:
		c->packets++;
		break;
	case C_REPLIES:
		c->replies++;
		break;
	case C_FLOWS:
		c->flows++;
		break;
	case C_NO_BACKEND:
		c->no_backend++;
		break;
	}
}

/* murmur3's mixing steps: a node-independent hash, so every node maps a flow alike. */
static __always_inline __u32 mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = (k << 15) | (k >> 17);
	k *= 0x1b873593;
	h ^= k;
	h = (h << 13) | (h >> 19);
	return h * 5 + 0xe6546b64;
}

static __always_inline __u32 fmix(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* The flow's hash: the client address, and its port unless the frontend has affinity. */
static __always_inline __u32 flow_hash(const struct ns_tuple *t, int client_only)
{
	__u32 h = 0x736b6966; /* "skif" */

	h = mix(h, t->saddr[0]);
	h = mix(h, t->saddr[1]);
	h = mix(h, t->saddr[2]);
	h = mix(h, t->saddr[3]);
	if (!client_only)
		h = mix(h, (__u32)t->sport);
	return fmix(h);
}

/* Parses Ethernet + IPv4/IPv6 + the TCP/UDP ports. 0: not ours. */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u16 ports[2];

	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end)
			return 0;
		if (ip->ihl < 5)
			return 0;
		/* fragments (MF or an offset) carry no ports in all but the first: left alone */
		if (ip->frag_off & bpf_htons(0x3fff))
			return 0;
		if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
			return 0;
		p->t.saddr[2] = bpf_htonl(0xffff);
		p->t.saddr[3] = ip->saddr;
		p->t.daddr[2] = bpf_htonl(0xffff);
		p->t.daddr[3] = ip->daddr;
		p->t.proto = ip->protocol;
		p->l4_off = ETH_HLEN + ip->ihl * 4;
		p->v6 = 0;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return 0;
		/* extension headers are not walked: such packets are left to the stack */
		if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP)
			return 0;
		__builtin_memcpy(p->t.saddr, ip6->saddr.in6_u.u6_addr32, 16);
		__builtin_memcpy(p->t.daddr, ip6->daddr.in6_u.u6_addr32, 16);
		p->t.proto = ip6->nexthdr;
		p->l4_off = ETH_HLEN + sizeof(struct ipv6hdr);
		p->v6 = 1;
	} else {
		return 0;
	}
	if (bpf_skb_load_bytes(skb, p->l4_off, ports, sizeof(ports)) < 0)
		return 0;
	p->t.sport = ports[0];
	p->t.dport = ports[1];
	return 1;
}

static __always_inline int addr_eq(const __u32 *a, const __u32 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

/*
 * Rewrites the source (dst == 0) or destination address and port, fixing the IPv4 header
 * checksum and the TCP/UDP checksum (pseudo header and port). Updates p->t. 0 on success.
 */
static __always_inline int rewrite(struct __sk_buff *skb, struct pkt *p, int dst,
				   const __u32 *addr, __u16 port)
{
	__u32 csum_off = p->l4_off + (p->t.proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
								: offsetof(struct udphdr, check));
	/* a UDP/IPv4 checksum of 0 means "none": keep it so, and never write a computed 0 */
	__u64 l4_flags = p->t.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__u32 *old_addr = dst ? p->t.daddr : p->t.saddr;
	__u16 *old_port = dst ? &p->t.dport : &p->t.sport;
	__u32 new_addr[4];

	__builtin_memcpy(new_addr, addr, 16);
	if (!addr_eq(old_addr, new_addr)) {
		if (!p->v6) {
			__u32 off = ETH_HLEN + (dst ? offsetof(struct iphdr, daddr)
						    : offsetof(struct iphdr, saddr));

			if (bpf_l4_csum_replace(skb, csum_off, old_addr[3], new_addr[3],
						l4_flags | BPF_F_PSEUDO_HDR | 4) < 0)
				return -1;
			if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check),
						old_addr[3], new_addr[3], 4) < 0)
				return -1;
			if (bpf_skb_store_bytes(skb, off, &new_addr[3], 4, 0) < 0)
				return -1;
		} else {
			__u32 off = ETH_HLEN + (dst ? offsetof(struct ipv6hdr, daddr)
						    : offsetof(struct ipv6hdr, saddr));
			/* IPv6 has no header checksum: only the pseudo header changes */
			__s64 diff = bpf_csum_diff(old_addr, 16, new_addr, 16, 0);

			if (diff < 0)
				return -1;
			if (bpf_l4_csum_replace(skb, csum_off, 0, diff,
						l4_flags | BPF_F_PSEUDO_HDR) < 0)
				return -1;
			if (bpf_skb_store_bytes(skb, off, new_addr, 16, 0) < 0)
				return -1;
		}
		__builtin_memcpy(old_addr, new_addr, 16);
	}
	if (*old_port != port) {
		if (bpf_l4_csum_replace(skb, csum_off, *old_port, port, l4_flags | 2) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, p->l4_off + (dst ? 2 : 0), &port, 2, 0) < 0)
			return -1;
		*old_port = port;
	}
	return 0;
}

/* The FIB's verdict on where p->t goes from here; fills fib. */
static __always_inline int fib(struct __sk_buff *skb, const struct pkt *p,
			       struct bpf_fib_lookup *f)
{
	__builtin_memset(f, 0, sizeof(*f));
	f->ifindex = skb->ingress_ifindex;
	f->l4_protocol = p->t.proto;
	f->sport = p->t.sport;
	f->dport = p->t.dport;
	if (p->v6) {
		f->family = AF_INET6;
		__builtin_memcpy(f->ipv6_src, p->t.saddr, 16);
		__builtin_memcpy(f->ipv6_dst, p->t.daddr, 16);
	} else {
		f->family = AF_INET;
		f->ipv4_src = p->t.saddr[3];
		f->ipv4_dst = p->t.daddr[3];
	}
	/* an input lookup from the interface the packet came in on, as the stack would route
	 * it (BPF_FIB_LOOKUP_OUTPUT would take ifindex as the required output device); it needs
	 * forwarding on in this namespace, as any router does, and checks no source address */
	return bpf_fib_lookup(skb, f, sizeof(*f), 0);
}

/* Sends a translated packet to its next hop; a local destination goes up the stack. */
static __always_inline int send_on(struct __sk_buff *skb, const struct pkt *p)
{
	struct bpf_fib_lookup f;
	int r = fib(skb, p, &f);

	if (r == BPF_FIB_LKUP_RET_SUCCESS || r == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(f.ifindex, NULL, 0, 0);
	if (r == BPF_FIB_LKUP_RET_NOT_FWDED)
		return TC_ACT_OK;
	/* unreachable, blackhole, prohibited: never let it wander */
	return TC_ACT_SHOT;
}

/* One Maglev pick from the frontend value `svc` (a copy). */
static __always_inline int pick(const struct ns_svc_value *svc, __u32 hash,
				struct ns_backend_value *out)
{
	struct maglev_key mk = {};
	struct ns_backend_key bk = {};
	struct maglev_chunk *chunk;
	struct ns_backend_value *be;
	__u32 h, index;

	if (svc->count == 0)
		return PICK_NONE;
	if (maglev_size == 0)
		return PICK_NONE;
	h = hash % maglev_size;
	mk.set = svc->set;
	mk.chunk = h / MAGLEV_CHUNK;
	chunk = bpf_map_lookup_elem(&ns_maglev, &mk);
	if (!chunk)
		return PICK_RETRY;
	index = chunk->index[h & (MAGLEV_CHUNK - 1)];
	if (index >= svc->count)
		return PICK_RETRY;
	bk.set = svc->set;
	bk.index = index;
	be = bpf_map_lookup_elem(&ns_backends, &bk);
	if (!be)
		return PICK_RETRY;
	*out = *be;
	return PICK_OK;
}

/* A reply of a translated flow: back to the client, from the frontend. */
static __always_inline int reverse(struct __sk_buff *skb, struct pkt *p, struct ns_reply *rv)
{
	struct ns_reply r = *rv;

	count(r.slot, C_REPLIES);
	if (rewrite(skb, p, 0, r.saddr, r.sport) < 0 || rewrite(skb, p, 1, r.daddr, r.dport) < 0)
		return TC_ACT_SHOT;
	return send_on(skb, p);
}

/*
 * Remembers a new flow: the reply entry first (for SNAT under a node port free for this
 * backend), then the flow. 0 on success.
 */
static __always_inline int remember(const struct pkt *p, struct ns_flow *flow, __u32 hash)
{
	struct ns_tuple rk = {};
	struct ns_reply rv = {};
	struct ns_snat_addr *snat;
	__u32 family = p->v6;

	__builtin_memcpy(rv.saddr, p->t.daddr, 16);
	rv.sport = p->t.dport;
	__builtin_memcpy(rv.daddr, p->t.saddr, 16);
	rv.dport = p->t.sport;
	rv.slot = flow->slot;
	__builtin_memcpy(rk.saddr, flow->backend, 16);
	rk.sport = flow->backend_port;
	rk.proto = p->t.proto;

	snat = flow->nat_port ? bpf_map_lookup_elem(&ns_snat, &family) : NULL;
	if (!snat || (snat->addr[0] | snat->addr[1] | snat->addr[2] | snat->addr[3]) == 0) {
		/* the client address is kept: the reply is addressed to the client itself */
		__builtin_memset(flow->nat_addr, 0, 16);
		flow->nat_port = 0;
		__builtin_memcpy(rk.daddr, p->t.saddr, 16);
		rk.dport = p->t.sport;
		if (bpf_map_update_elem(&ns_replies, &rk, &rv, BPF_ANY) < 0)
			return -1;
	} else {
		int i;

		__builtin_memcpy(flow->nat_addr, snat->addr, 16);
		__builtin_memcpy(rk.daddr, snat->addr, 16);
		/* the client's own port first (usually free), then ports chosen by hash */
		for (i = 0; i < SNAT_TRIES; i++) {
			struct ns_reply *taken;
			__u16 port = i == 0 ? p->t.sport
					    : bpf_htons(1024 + fmix(hash + i) % (65536 - 1024));

			rk.dport = port;
			if (bpf_map_update_elem(&ns_replies, &rk, &rv, BPF_NOEXIST) == 0)
				break;
			/* taken: by this very flow (its entry outlived the flow's own) is fine */
			taken = bpf_map_lookup_elem(&ns_replies, &rk);
			if (taken && addr_eq(taken->daddr, rv.daddr) && taken->dport == rv.dport &&
			    addr_eq(taken->saddr, rv.saddr) && taken->sport == rv.sport) {
				taken->slot = rv.slot;
				break;
			}
		}
		if (i == SNAT_TRIES)
			return -1;
		flow->nat_port = rk.dport;
	}
	return bpf_map_update_elem(&ns_flows, &p->t, flow, BPF_ANY) < 0 ? -1 : 0;
}

/* Whether a remembered flow may go on to its backend. */
static __always_inline int flow_valid(const struct pkt *p, const struct ns_flow *flow,
				      const struct ns_svc_value *svc)
{
	struct ns_member_key mk = {};

	/* the frontend was removed and made again: its flows are history */
	if (flow->slot != svc->slot)
		return 0;
	/* TCP keeps its backend while the connection lives (as kube-proxy's conntrack does);
	 * a UDP flow whose backend left is balanced again rather than sent into the void */
	if (p->t.proto != IPPROTO_UDP)
		return 1;
	mk.slot = svc->slot;
	__builtin_memcpy(mk.addr, flow->backend, 16);
	mk.port = flow->backend_port;
	return bpf_map_lookup_elem(&ns_members, &mk) != NULL;
}

SEC("classifier")
int skiff_nodeport(struct __sk_buff *skb)
{
	struct ns_svc_key key = {};
	struct ns_backend_value be;
	struct ns_svc_value svc;
	struct ns_svc_value *sv;
	struct ns_reply *rv;
	struct ns_flow *known;
	struct ns_flow flow = {};
	struct pkt p = {};
	__u32 hash;
	int r;

	if (!parse(skb, &p))
		return TC_ACT_OK;

	rv = bpf_map_lookup_elem(&ns_replies, &p.t);
	if (rv)
		return reverse(skb, &p, rv);

	__builtin_memcpy(key.addr, p.t.daddr, 16);
	key.port = p.t.dport;
	key.proto = p.t.proto;
	sv = bpf_map_lookup_elem(&ns_services, &key);
	if (!sv)
		return TC_ACT_OK;
	svc = *sv;

	known = bpf_map_lookup_elem(&ns_flows, &p.t);
	if (known && flow_valid(&p, known, &svc)) {
		flow = *known;
	} else {
		hash = flow_hash(&p.t, svc.flags & NS_F_AFFINITY);
		r = pick(&svc, hash, &be);
		if (r == PICK_RETRY) {
			/* userspace switched the frontend to a new set and deleted the one we read */
			sv = bpf_map_lookup_elem(&ns_services, &key);
			if (!sv)
				return TC_ACT_OK;
			svc = *sv;
			r = pick(&svc, hash, &be);
		}
		if (r != PICK_OK) {
			struct bpf_fib_lookup f;

			count(svc.slot, C_NO_BACKEND);
			/* no endpoint: a frontend the node owns (NodePort, LoadBalancer IP) is
			 * answered by its stack (TCP reset, ICMP port unreachable); anything else
			 * is dropped rather than routed on */
			return fib(skb, &p, &f) == BPF_FIB_LKUP_RET_NOT_FWDED ? TC_ACT_OK
									     : TC_ACT_SHOT;
		}
		__builtin_memcpy(flow.backend, be.addr, 16);
		flow.backend_port = be.port;
		flow.slot = svc.slot;
		/* nat_port != 0 asks remember() for SNAT; it picks the real port */
		flow.nat_port = (svc.flags & NS_F_SNAT) ? 1 : 0;
		if (remember(&p, &flow, hash) < 0)
			return TC_ACT_SHOT;
		count(svc.slot, C_FLOWS);
	}
	count(svc.slot, C_PACKETS);
	if (flow.nat_port &&
	    rewrite(skb, &p, 0, flow.nat_addr, flow.nat_port) < 0)
		return TC_ACT_SHOT;
	if (rewrite(skb, &p, 1, flow.backend, flow.backend_port) < 0)
		return TC_ACT_SHOT;
	return send_on(skb, &p);
}

/* bpf_fib_lookup and bpf_redirect_neigh are not GPL-only; the dual licence keeps it open. */
char _license[] SEC("license") = "Dual BSD/GPL";
