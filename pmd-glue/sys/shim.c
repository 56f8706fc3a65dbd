/* See shim.h. Compiled with DPDK's own cflags from pkg-config so that the inline code matches
 * the installed libraries. */
#include <rte_config.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_pause.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_cryptodev.h>
#include <rte_jhash.h>
#include "shim.h"

int shim_rte_errno(void) { return rte_errno; }
unsigned shim_rte_lcore_id(void) { return rte_lcore_id(); }
int shim_rte_socket_id(void) { return (int)rte_socket_id(); }
uint64_t shim_rte_rdtsc(void) { return rte_rdtsc(); }
void shim_rte_pause(void) { rte_pause(); }

uint16_t shim_rte_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t shim_rte_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *shim_rte_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int shim_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void shim_rte_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

void shim_rte_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned count)
{
	rte_pktmbuf_free_bulk(mbufs, count);
}

struct rte_mbuf *shim_rte_pktmbuf_clone(struct rte_mbuf *md, struct rte_mempool *mp)
{
	return rte_pktmbuf_clone(md, mp);
}

char *shim_rte_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
char *shim_rte_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *shim_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
int shim_rte_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
int shim_rte_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail) { return rte_pktmbuf_chain(head, tail); }
uint16_t shim_rte_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t shim_rte_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
uint16_t shim_rte_mbuf_refcnt_read(const struct rte_mbuf *m) { return rte_mbuf_refcnt_read(m); }
int shim_rte_mbuf_is_direct(const struct rte_mbuf *m) { return RTE_MBUF_DIRECT(m) ? 1 : 0; }
int shim_rte_pktmbuf_is_contiguous(const struct rte_mbuf *m) { return rte_pktmbuf_is_contiguous(m); }

const void *shim_rte_pktmbuf_read(const struct rte_mbuf *m, uint32_t off, uint32_t len, void *buf)
{
	return rte_pktmbuf_read(m, off, len, buf);
}

uint16_t shim_rte_cryptodev_enqueue_burst(uint8_t dev, uint16_t qp, struct rte_crypto_op **ops, uint16_t n)
{
	return rte_cryptodev_enqueue_burst(dev, qp, ops, n);
}

uint16_t shim_rte_cryptodev_dequeue_burst(uint8_t dev, uint16_t qp, struct rte_crypto_op **ops, uint16_t n)
{
	return rte_cryptodev_dequeue_burst(dev, qp, ops, n);
}

struct rte_crypto_op *shim_rte_crypto_op_alloc(struct rte_mempool *mp, int type)
{
	return rte_crypto_op_alloc(mp, (enum rte_crypto_op_type)type);
}

void shim_rte_crypto_op_free(struct rte_crypto_op *op) { rte_crypto_op_free(op); }

int shim_rte_crypto_op_attach_sym_session(struct rte_crypto_op *op, void *sess)
{
	return rte_crypto_op_attach_sym_session(op, sess);
}

void shim_rte_mempool_put_bulk(struct rte_mempool *mp, void *const *objs, unsigned n)
{
	rte_mempool_put_bulk(mp, objs, n);
}

int shim_rte_mempool_get_bulk(struct rte_mempool *mp, void **objs, unsigned n)
{
	return rte_mempool_get_bulk(mp, objs, n);
}

uint64_t shim_rte_pktmbuf_iova_offset(const struct rte_mbuf *m, uint32_t off)
{
	return rte_pktmbuf_iova_offset(m, off);
}

uint32_t shim_rte_jhash(const void *key, uint32_t length, uint32_t initval)
{
	return rte_jhash(key, length, initval);
}

uint32_t shim_rte_jhash_32b(const uint32_t *k, uint32_t length_words, uint32_t initval)
{
	return rte_jhash_32b(k, length_words, initval);
}

uint32_t shim_rte_jhash_3words(uint32_t a, uint32_t b, uint32_t c, uint32_t initval)
{
	return rte_jhash_3words(a, b, c, initval);
}

const uint64_t shim_eth_rss_ip = RTE_ETH_RSS_IP;
const uint64_t shim_eth_rss_tcp = RTE_ETH_RSS_TCP;
const uint64_t shim_eth_rss_udp = RTE_ETH_RSS_UDP;
const uint64_t shim_eth_tx_offload_mbuf_fast_free = RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE;
const uint64_t shim_eth_tx_offload_multi_segs = RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
const uint64_t shim_eth_rx_offload_ipv4_cksum = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
