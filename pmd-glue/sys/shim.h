/* Out-of-line wrappers for DPDK's static-inline API, which bindgen cannot link to. Each one
 * forwards to the DPDK function of the same name without the `shim_` prefix, with the same
 * contract. */
#ifndef PMD_GLUE_SHIM_H
#define PMD_GLUE_SHIM_H
#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;
struct rte_crypto_op;

int shim_rte_errno(void);
unsigned shim_rte_lcore_id(void);
int shim_rte_socket_id(void);
uint64_t shim_rte_rdtsc(void);
void shim_rte_pause(void);

uint16_t shim_rte_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t shim_rte_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);

struct rte_mbuf *shim_rte_pktmbuf_alloc(struct rte_mempool *mp);
int shim_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count);
void shim_rte_pktmbuf_free(struct rte_mbuf *m);
void shim_rte_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned count);
struct rte_mbuf *shim_rte_pktmbuf_clone(struct rte_mbuf *md, struct rte_mempool *mp);
char *shim_rte_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
char *shim_rte_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *shim_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
int shim_rte_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
int shim_rte_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail);
uint16_t shim_rte_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t shim_rte_pktmbuf_tailroom(const struct rte_mbuf *m);
uint16_t shim_rte_mbuf_refcnt_read(const struct rte_mbuf *m);
int shim_rte_mbuf_is_direct(const struct rte_mbuf *m);
int shim_rte_pktmbuf_is_contiguous(const struct rte_mbuf *m);
const void *shim_rte_pktmbuf_read(const struct rte_mbuf *m, uint32_t off, uint32_t len, void *buf);

uint16_t shim_rte_cryptodev_enqueue_burst(uint8_t dev, uint16_t qp, struct rte_crypto_op **ops, uint16_t n);
uint16_t shim_rte_cryptodev_dequeue_burst(uint8_t dev, uint16_t qp, struct rte_crypto_op **ops, uint16_t n);
struct rte_crypto_op *shim_rte_crypto_op_alloc(struct rte_mempool *mp, int type);
void shim_rte_crypto_op_free(struct rte_crypto_op *op);
int shim_rte_crypto_op_attach_sym_session(struct rte_crypto_op *op, void *sess);
void shim_rte_mempool_put_bulk(struct rte_mempool *mp, void *const *objs, unsigned n);
int shim_rte_mempool_get_bulk(struct rte_mempool *mp, void **objs, unsigned n);
/* rte_pktmbuf_iova_offset (a macro): the IO address of byte `off` of the first segment's data. */
uint64_t shim_rte_pktmbuf_iova_offset(const struct rte_mbuf *m, uint32_t off);

uint32_t shim_rte_jhash(const void *key, uint32_t length, uint32_t initval);
uint32_t shim_rte_jhash_32b(const uint32_t *k, uint32_t length_words, uint32_t initval);
uint32_t shim_rte_jhash_3words(uint32_t a, uint32_t b, uint32_t c, uint32_t initval);

/* Values of DPDK's function-like macros, which bindgen cannot evaluate. */
extern const uint64_t shim_eth_rss_ip;
extern const uint64_t shim_eth_rss_tcp;
extern const uint64_t shim_eth_rss_udp;
extern const uint64_t shim_eth_tx_offload_mbuf_fast_free;
extern const uint64_t shim_eth_tx_offload_multi_segs;
extern const uint64_t shim_eth_rx_offload_ipv4_cksum;

#endif
