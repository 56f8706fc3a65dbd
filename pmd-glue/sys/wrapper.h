/* Headers bindgen reads. Everything DPDK exports from these is bound; static-inline
 * functions are reached through shim.c instead. */
#include <rte_config.h>
#include <rte_common.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_log.h>
#include <rte_dev.h>
#include <rte_bus_vdev.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_cryptodev.h>
#include <rte_jhash.h>
#include <rte_version.h>
/* Classic BPF: libpcap's struct bpf_program (which rte_bpf_convert takes) and DPDK's BPF
 * library (rte_bpf_convert is experimental API: build.rs defines ALLOW_EXPERIMENTAL_API), whose
 * converter returns memory to free with rte_free. */
#include <pcap/bpf.h>
#include <rte_bpf.h>
#include <rte_malloc.h>
#include "shim.h"
