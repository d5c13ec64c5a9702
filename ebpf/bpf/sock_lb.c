/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * skiff socket-level load balancer: cgroup sock_addr programs that translate a virtual service
 * address to a backend once per connect() (or per unconnected UDP sendmsg()), and restore the
 * virtual address in recvmsg()/getpeername(), so no packet ever carries the virtual address.
 *
 * These programs are attached at the cgroup v2 root and so see EVERY socket of the machine: each
 * one first checks the socket's network namespace cookie against `allowed_netns` and leaves
 * anything else untouched (return 1).
 *
 * Verdicts: connect/sendmsg return 1 to let the call proceed (possibly with a rewritten address)
 * and 0 to fail it. A service without endpoints fails connect()/sendmsg() at once with
 * ECONNREFUSED (bpf_set_retval), what a client of kube-proxy sees when its REJECT rule answers
 * with ICMP port unreachable; on kernels before 5.18 (no such helper) the error is EPERM.
 * recvmsg and getpeername programs must return 1.
 */
#include <linux/bpf.h>
#include <linux/errno.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "skiff_lb.h"

/* Default sizes; the loader overrides them (SockLbOptions). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} allowed_netns SEC(".maps");

/*
 * services and backends are not preallocated: an update of an existing key then links a new
 * element and frees the old one after an RCU grace period, so a program that looked up the old
 * value keeps reading a consistent copy instead of an element being reused under it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct svc_key);
	__type(value, struct svc_value);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct backend_key);
	__type(value, struct backend_value);
} backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct affinity_key);
	__type(value, struct affinity_value);
} affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct member_key);
	__type(value, __u32);
} affinity_members SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct revnat_key);
	__type(value, struct revnat_value);
} rev_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct svc_counters);
} counters SEC(".maps");

#define NSEC_PER_SEC 1000000000ULL

enum lb_result {
	LB_NOT_SERVICE = 0, /* not a virtual address: leave the call alone */
	LB_TRANSLATED = 1,  /* *out holds the backend */
	LB_REJECT = 2,      /* a service without backends: fail the call */
	LB_RETRY = 3,       /* the backend set changed under us: look the service up again */
};

static __always_inline int netns_allowed(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_netns_cookie(ctx);

	return bpf_map_lookup_elem(&allowed_netns, &cookie) != NULL;
}

static __always_inline int is_v4_mapped(const __u32 *addr)
{
	return addr[0] == 0 && addr[1] == 0 && addr[2] == bpf_htonl(0xffff);
}

static __always_inline void count(__u32 slot, int datagram, int rejected)
{
	struct svc_counters *c = bpf_map_lookup_elem(&counters, &slot);

	if (!c)
		return;
	/* per-CPU values: a plain increment cannot race */
	if (rejected)
		c->rejected++;
	else if (datagram)
		c->datagrams++;
	else
		c->connects++;
}

/* One attempt at choosing a backend for the service behind `key`. */
static __always_inline int lb_pick(struct bpf_sock_addr *ctx, struct svc_key *key, int datagram,
				   struct backend_value *out)
{
	struct svc_value *sv = bpf_map_lookup_elem(&services, key);
	struct affinity_key ak = {};
	struct affinity_value av = {};
	struct backend_key bk = {};
	struct backend_value *be;
	__u64 now = 0;
	__u32 index;

	if (!sv)
		return LB_NOT_SERVICE;
	/* one copy: the fields below belong to one version of the service */
	struct svc_value svc = *sv;

	if (svc.count == 0) {
		count(svc.slot, datagram, 1);
		return LB_REJECT;
	}
	index = bpf_get_prandom_u32() % svc.count;
	if (svc.flags & SVC_F_AFFINITY) {
		struct affinity_value *prev;

		/* ClientIP affinity: every socket of one network namespace has the same source
		 * address, and connect() runs before the source address is chosen, so the
		 * namespace stands for the client. */
		ak.netns_cookie = bpf_get_netns_cookie(ctx);
		ak.slot = svc.slot;
		now = bpf_ktime_get_ns();
		prev = bpf_map_lookup_elem(&affinity, &ak);
		if (prev && now - prev->last_used_ns <= (__u64)svc.affinity_timeout * NSEC_PER_SEC) {
			if (prev->set == svc.set) {
				if (prev->index < svc.count)
					index = prev->index;
			} else {
				/* The backends changed since: the same index may name another
				 * backend, so find the client's backend in the new set. Gone:
				 * keep the fresh random pick. */
				struct member_key mk = {};
				__u32 *moved;

				mk.set = svc.set;
				__builtin_memcpy(mk.addr, prev->addr, sizeof(mk.addr));
				mk.port = prev->port;
				moved = bpf_map_lookup_elem(&affinity_members, &mk);
				if (moved && *moved < svc.count)
					index = *moved;
			}
		}
	}
	bk.set = svc.set;
	bk.index = index;
	be = bpf_map_lookup_elem(&backends, &bk);
	if (!be)
		/* userspace writes a new set, switches the service to it, then deletes the old set:
		 * a miss means we read the old service value just before the switch. */
		return LB_RETRY;
	*out = *be;
	if (svc.flags & SVC_F_AFFINITY) {
		av.last_used_ns = now;
		av.set = svc.set;
		av.index = index;
		__builtin_memcpy(av.addr, out->addr, sizeof(av.addr));
		av.port = out->port;
		bpf_map_update_elem(&affinity, &ak, &av, BPF_ANY);
	}
	count(svc.slot, datagram, 0);
	return LB_TRANSLATED;
}

static __always_inline int lb_translate(struct bpf_sock_addr *ctx, struct svc_key *key,
					int datagram, struct backend_value *out)
{
	int r = lb_pick(ctx, key, datagram, out);

	if (r == LB_RETRY)
		r = lb_pick(ctx, key, datagram, out);
	/* two updates of one service within one connect(): refuse rather than guess */
	if (r == LB_RETRY)
		r = LB_REJECT;
	return r;
}

static __always_inline void remember(struct bpf_sock_addr *ctx, const struct backend_value *be,
				     const struct svc_key *key)
{
	struct revnat_key rk = {};
	struct revnat_value rv = {};

	rk.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(rk.addr, be->addr, sizeof(rk.addr));
	rk.port = be->port;
	__builtin_memcpy(rv.addr, key->addr, sizeof(rv.addr));
	rv.port = key->port;
	bpf_map_update_elem(&rev_nat, &rk, &rv, BPF_ANY);
}

/*
 * Set by the loader: 1 when the kernel has bpf_set_retval (5.18+). A constant the verifier
 * sees (.rodata is frozen), so on older kernels the call below is dead code it never checks.
 */
volatile const __u8 have_set_retval = 0;

/* Fails the call with "connection refused", as a rejected service does under kube-proxy. */
static __always_inline int refuse(void)
{
	if (have_set_retval)
		bpf_set_retval(-ECONNREFUSED);
	return 0;
}

static __always_inline int supported_proto(__u32 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}

static __always_inline int translate4(struct bpf_sock_addr *ctx, int datagram)
{
	struct svc_key key = {};
	struct backend_value be;
	__u32 proto;
	int r;

	if (!netns_allowed(ctx))
		return 1;
	proto = ctx->protocol;
	if (!supported_proto(proto))
		return 1;
	key.addr[2] = bpf_htonl(0xffff);
	key.addr[3] = ctx->user_ip4;
	key.port = (__u16)ctx->user_port;
	key.proto = (__u8)proto;
	r = lb_translate(ctx, &key, datagram, &be);
	if (r == LB_NOT_SERVICE)
		return 1;
	/* an IPv4 socket cannot reach an IPv6 backend: the loader never programs that */
	if (r == LB_REJECT || !is_v4_mapped(be.addr))
		return refuse();
	ctx->user_ip4 = be.addr[3];
	ctx->user_port = be.port;
	remember(ctx, &be, &key);
	return 1;
}

static __always_inline int translate6(struct bpf_sock_addr *ctx, int datagram)
{
	struct svc_key key = {};
	struct backend_value be;
	__u32 proto;
	int r;

	if (!netns_allowed(ctx))
		return 1;
	proto = ctx->protocol;
	if (!supported_proto(proto))
		return 1;
	/* a v4-mapped destination on a dual-stack socket finds the IPv4 service */
	key.addr[0] = ctx->user_ip6[0];
	key.addr[1] = ctx->user_ip6[1];
	key.addr[2] = ctx->user_ip6[2];
	key.addr[3] = ctx->user_ip6[3];
	key.port = (__u16)ctx->user_port;
	key.proto = (__u8)proto;
	r = lb_translate(ctx, &key, datagram, &be);
	if (r == LB_NOT_SERVICE)
		return 1;
	if (r == LB_REJECT)
		return refuse();
	ctx->user_ip6[0] = be.addr[0];
	ctx->user_ip6[1] = be.addr[1];
	ctx->user_ip6[2] = be.addr[2];
	ctx->user_ip6[3] = be.addr[3];
	ctx->user_port = be.port;
	remember(ctx, &be, &key);
	return 1;
}

/* Restores the virtual address a socket asked for in place of the backend's. Always 1. */
static __always_inline int restore4(struct bpf_sock_addr *ctx)
{
	struct revnat_key rk = {};
	struct revnat_value *rv;

	if (!netns_allowed(ctx))
		return 1;
	rk.cookie = bpf_get_socket_cookie(ctx);
	rk.addr[2] = bpf_htonl(0xffff);
	rk.addr[3] = ctx->user_ip4;
	rk.port = (__u16)ctx->user_port;
	rv = bpf_map_lookup_elem(&rev_nat, &rk);
	if (rv && is_v4_mapped(rv->addr)) {
		ctx->user_ip4 = rv->addr[3];
		ctx->user_port = rv->port;
	}
	return 1;
}

static __always_inline int restore6(struct bpf_sock_addr *ctx)
{
	struct revnat_key rk = {};
	struct revnat_value *rv;

	if (!netns_allowed(ctx))
		return 1;
	rk.cookie = bpf_get_socket_cookie(ctx);
	rk.addr[0] = ctx->user_ip6[0];
	rk.addr[1] = ctx->user_ip6[1];
	rk.addr[2] = ctx->user_ip6[2];
	rk.addr[3] = ctx->user_ip6[3];
	rk.port = (__u16)ctx->user_port;
	rv = bpf_map_lookup_elem(&rev_nat, &rk);
	if (rv) {
		ctx->user_ip6[0] = rv->addr[0];
		ctx->user_ip6[1] = rv->addr[1];
		ctx->user_ip6[2] = rv->addr[2];
		ctx->user_ip6[3] = rv->addr[3];
		ctx->user_port = rv->port;
	}
	return 1;
}

SEC("cgroup/connect4")
int skiff_connect4(struct bpf_sock_addr *ctx)
{
	return translate4(ctx, 0);
}

SEC("cgroup/connect6")
int skiff_connect6(struct bpf_sock_addr *ctx)
{
	return translate6(ctx, 0);
}

/* sendmsg hooks run only for UDP sendto()/sendmsg() with an explicit destination */
SEC("cgroup/sendmsg4")
int skiff_sendmsg4(struct bpf_sock_addr *ctx)
{
	return translate4(ctx, 1);
}

SEC("cgroup/sendmsg6")
int skiff_sendmsg6(struct bpf_sock_addr *ctx)
{
	return translate6(ctx, 1);
}

SEC("cgroup/recvmsg4")
int skiff_recvmsg4(struct bpf_sock_addr *ctx)
{
	return restore4(ctx);
}

SEC("cgroup/recvmsg6")
int skiff_recvmsg6(struct bpf_sock_addr *ctx)
{
	return restore6(ctx);
}

SEC("cgroup/getpeername4")
int skiff_getpeername4(struct bpf_sock_addr *ctx)
{
	return restore4(ctx);
}

SEC("cgroup/getpeername6")
int skiff_getpeername6(struct bpf_sock_addr *ctx)
{
	return restore6(ctx);
}

/* None of the helpers used is GPL-only; the dual licence keeps that option open. */
char _license[] SEC("license") = "Dual BSD/GPL";
