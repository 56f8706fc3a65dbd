//! Ethernet ports: configure, queues, start/stop/close, link, stats and xstats.
use crate::error::{chars_to_string, cstr_to_string, DpdkError};
use crate::lcore::SocketId;
use crate::live::Live;
use crate::mbuf::{Burst, TxBuffer};
use crate::mempool::Mempool;
use crate::sys;
use std::ffi::CString;
use std::fmt;
use std::sync::Arc;

/// A DPDK ethdev port id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How to configure a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Receive queues (spread by RSS when more than one and the device supports RSS).
    pub rx_queues: u16,
    /// Transmit queues (one per worker lcore that sends on the port; 0 for a receive-only port).
    pub tx_queues: u16,
    /// Receive descriptors per queue (adjusted to the device's limits).
    pub rx_desc: u16,
    /// Transmit descriptors per queue (adjusted to the device's limits).
    pub tx_desc: u16,
    /// Receive every frame regardless of destination MAC.
    pub promiscuous: bool,
    /// MTU to set, if any.
    pub mtu: Option<u16>,
}

/// What the device says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Driver name, e.g. "net_pcap".
    pub driver: String,
    /// Device name, e.g. "net_pcap0" or "0000:3b:00.0".
    pub name: String,
    /// Maximum receive queues.
    pub max_rx_queues: u16,
    /// Maximum transmit queues.
    pub max_tx_queues: u16,
    /// RSS hash types the device supports (`RTE_ETH_RSS_*`); 0 when it has no RSS.
    pub rss_offloads: u64,
    /// Transmit offload capabilities (`RTE_ETH_TX_OFFLOAD_*`).
    pub tx_offload_capa: u64,
    /// Receive offload capabilities (`RTE_ETH_RX_OFFLOAD_*`).
    pub rx_offload_capa: u64,
    /// NUMA socket of the device.
    pub socket: SocketId,
    /// Permanent MAC address.
    pub mac: [u8; 6],
}

/// DPDK's basic per-port counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortStats {
    /// Packets received.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Packets the device dropped because the receive queues were full.
    pub imissed: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Transmit errors.
    pub oerrors: u64,
    /// Receive mbuf allocation failures.
    pub rx_nombuf: u64,
}

#[derive(Debug)]
struct Shared {
    _live: Live,
}

/// An ethdev port, owned. Queues are taken out once after start ([`Port::take_queues`]);
/// stopping or closing is refused while a queue handle is alive. Dropping the port stops and
/// closes it, which releases the mbufs the driver held.
#[derive(Debug)]
pub struct Port {
    id: PortId,
    shared: Arc<Shared>,
    configured: Option<PortConfig>,
    started: bool,
    closed: bool,
    queues_taken: bool,
}

/// A receive queue, owned by the one lcore that polls it.
#[derive(Debug)]
pub struct RxQueue {
    port: PortId,
    queue: u16,
    _shared: Arc<Shared>,
}

/// A transmit queue, owned by the one lcore that sends on it.
#[derive(Debug)]
pub struct TxQueue {
    port: PortId,
    queue: u16,
    _shared: Arc<Shared>,
}

/// Reads a port's counters from the control thread. Holding one keeps `Eal::cleanup` from
/// running, but not the port from stopping (reads of a stopped or closed port return errors).
#[derive(Debug, Clone)]
pub struct StatsReader {
    port: PortId,
    xstat_names: Arc<Vec<String>>,
    _live: Live,
}

/// Linux errno for "operation not supported" (ENOTSUP == EOPNOTSUPP on Linux).
const ENOTSUP: i32 = 95;

fn check(op: impl FnOnce() -> String, rc: i32) -> Result<(), DpdkError> {
    if rc < 0 {
        Err(DpdkError::new(op(), rc))
    } else {
        Ok(())
    }
}

impl Port {
    /// The port DPDK probed under device `name` (a vdev name such as "net_pcap0" or a PCI
    /// address).
    pub fn by_name(name: &str) -> Result<Port, DpdkError> {
        let c =
            CString::new(name).map_err(|_| DpdkError::new(format!("port name {name:?}"), 22))?;
        let mut id = 0u16;
        // SAFETY: valid C string and out pointer.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
        check(|| format!("rte_eth_dev_get_port_by_name({name})"), rc)?;
        Ok(Port {
            id: PortId(id),
            shared: Arc::new(Shared { _live: Live::new() }),
            configured: None,
            started: false,
            closed: false,
            queues_taken: false,
        })
    }

    /// The port id.
    pub fn id(&self) -> PortId {
        self.id
    }

    /// Device information.
    pub fn info(&self) -> Result<PortInfo, DpdkError> {
        let mut di = sys::rte_eth_dev_info::default();
        // SAFETY: valid out pointer; DPDK fills the struct.
        let rc = unsafe { sys::rte_eth_dev_info_get(self.id.0, &mut di) };
        check(|| format!("rte_eth_dev_info_get(port {})", self.id), rc)?;
        let mut name = [0 as std::ffi::c_char; sys::RTE_ETH_NAME_MAX_LEN as usize];
        // SAFETY: `name` has RTE_ETH_NAME_MAX_LEN bytes as the API requires.
        let rc = unsafe { sys::rte_eth_dev_get_name_by_port(self.id.0, name.as_mut_ptr()) };
        check(
            || format!("rte_eth_dev_get_name_by_port(port {})", self.id),
            rc,
        )?;
        let mut mac = sys::rte_ether_addr::default();
        // SAFETY: valid out pointer.
        let rc = unsafe { sys::rte_eth_macaddr_get(self.id.0, &mut mac) };
        check(|| format!("rte_eth_macaddr_get(port {})", self.id), rc)?;
        // SAFETY: valid port id (checked by the calls above).
        let socket = unsafe { sys::rte_eth_dev_socket_id(self.id.0) };
        Ok(PortInfo {
            // SAFETY: driver_name is a static string owned by the driver.
            driver: unsafe { cstr_to_string(di.driver_name) },
            name: chars_to_string(&name),
            max_rx_queues: di.max_rx_queues,
            max_tx_queues: di.max_tx_queues,
            rss_offloads: di.flow_type_rss_offloads,
            tx_offload_capa: di.tx_offload_capa,
            rx_offload_capa: di.rx_offload_capa,
            socket: SocketId(socket),
            mac: mac.addr_bytes,
        })
    }

    /// Configures the port and sets up its queues, with receive buffers from `pool`.
    /// RSS over IP/TCP/UDP is enabled when there is more than one receive queue and the device
    /// supports it. Returns whether RSS was enabled.
    pub fn configure(&mut self, conf: &PortConfig, pool: &Mempool) -> Result<bool, DpdkError> {
        if self.started {
            return Err(DpdkError::new(
                format!("configure port {}: port is started", self.id),
                16,
            ));
        }
        let info = self.info()?;
        let op = |what: &str| format!("{what}(port {} {})", self.id, info.name);
        if conf.rx_queues == 0 || conf.rx_queues > info.max_rx_queues {
            return Err(DpdkError::new(
                format!(
                    "port {}: {} rx queues requested, device supports 1..={}",
                    info.name, conf.rx_queues, info.max_rx_queues
                ),
                22,
            ));
        }
        if conf.tx_queues > info.max_tx_queues {
            return Err(DpdkError::new(
                format!(
                    "port {}: {} tx queues requested, device supports at most {}",
                    info.name, conf.tx_queues, info.max_tx_queues
                ),
                22,
            ));
        }
        let mut ec = sys::rte_eth_conf::default();
        // SAFETY: plain reads of constants the shim exports.
        let (rss_ip, rss_tcp, rss_udp, multi_segs) = unsafe {
            (
                sys::shim_eth_rss_ip,
                sys::shim_eth_rss_tcp,
                sys::shim_eth_rss_udp,
                sys::shim_eth_tx_offload_multi_segs,
            )
        };
        let rss_hf = (rss_ip | rss_tcp | rss_udp) & info.rss_offloads;
        let rss = conf.rx_queues > 1 && rss_hf != 0;
        if rss {
            ec.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
            ec.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        ec.txmode.offloads = info.tx_offload_capa & multi_segs;
        // Let the NIC verify IPv4 header checksums where it can; mbufs then carry
        // RTE_MBUF_F_RX_IP_CKSUM_GOOD and the pipeline skips its software check.
        // SAFETY: plain read of a constant the shim exports.
        ec.rxmode.offloads = info.rx_offload_capa & unsafe { sys::shim_eth_rx_offload_ipv4_cksum };
        // SAFETY: valid port id and configuration struct.
        let rc =
            unsafe { sys::rte_eth_dev_configure(self.id.0, conf.rx_queues, conf.tx_queues, &ec) };
        check(|| op("rte_eth_dev_configure"), rc)?;
        let (mut nrx, mut ntx) = (conf.rx_desc, conf.tx_desc);
        // SAFETY: valid port id and in/out pointers.
        let rc = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(self.id.0, &mut nrx, &mut ntx) };
        check(|| op("rte_eth_dev_adjust_nb_rx_tx_desc"), rc)?;
        let socket = if info.socket.0 < 0 {
            0
        } else {
            info.socket.0 as u32
        };
        for q in 0..conf.rx_queues {
            // SAFETY: configured port, queue index below the configured count, valid pool; a
            // null rx_conf selects the driver's defaults.
            let rc = unsafe {
                sys::rte_eth_rx_queue_setup(
                    self.id.0,
                    q,
                    nrx,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            check(|| op(&format!("rte_eth_rx_queue_setup[q{q}]")), rc)?;
        }
        for q in 0..conf.tx_queues {
            // SAFETY: as above; null tx_conf selects the driver's defaults.
            let rc =
                unsafe { sys::rte_eth_tx_queue_setup(self.id.0, q, ntx, socket, std::ptr::null()) };
            check(|| op(&format!("rte_eth_tx_queue_setup[q{q}]")), rc)?;
        }
        if let Some(mtu) = conf.mtu {
            // SAFETY: valid port id.
            let rc = unsafe { sys::rte_eth_dev_set_mtu(self.id.0, mtu) };
            check(|| op(&format!("rte_eth_dev_set_mtu({mtu})")), rc)?;
        }
        if conf.promiscuous {
            // SAFETY: valid port id. Some virtual devices do not implement promiscuous mode
            // (-ENOTSUP): that is not an error for them, they receive everything anyway.
            let rc = unsafe { sys::rte_eth_promiscuous_enable(self.id.0) };
            if rc < 0 && rc != -ENOTSUP {
                check(|| op("rte_eth_promiscuous_enable"), rc)?;
            }
        }
        self.configured = Some(conf.clone());
        Ok(rss)
    }

    /// Starts the port.
    pub fn start(&mut self) -> Result<(), DpdkError> {
        if self.configured.is_none() {
            return Err(DpdkError::new(
                format!("start port {}: not configured", self.id),
                22,
            ));
        }
        // SAFETY: configured port with all queues set up.
        let rc = unsafe { sys::rte_eth_dev_start(self.id.0) };
        check(|| format!("rte_eth_dev_start(port {})", self.id), rc)?;
        self.started = true;
        Ok(())
    }

    /// Hands out every queue once, after start: (rx queues, tx queues), indexed by queue id.
    pub fn take_queues(&mut self) -> Result<(Vec<RxQueue>, Vec<TxQueue>), DpdkError> {
        let conf = match (&self.configured, self.started, self.queues_taken) {
            (Some(c), true, false) => c.clone(),
            _ => {
                return Err(DpdkError::new(
                    format!(
                        "take queues of port {}: not started or already taken",
                        self.id
                    ),
                    16,
                ))
            }
        };
        self.queues_taken = true;
        let rx = (0..conf.rx_queues)
            .map(|queue| RxQueue {
                port: self.id,
                queue,
                _shared: self.shared.clone(),
            })
            .collect();
        let tx = (0..conf.tx_queues)
            .map(|queue| TxQueue {
                port: self.id,
                queue,
                _shared: self.shared.clone(),
            })
            .collect();
        Ok((rx, tx))
    }

    /// A counters reader for the control thread.
    pub fn stats_reader(&self) -> Result<StatsReader, DpdkError> {
        Ok(StatsReader {
            port: self.id,
            xstat_names: Arc::new(xstat_names(self.id)?),
            _live: Live::new(),
        })
    }

    /// Link status: (up, speed in Mbps).
    pub fn link(&self) -> Result<(bool, u32), DpdkError> {
        link_of(self.id)
    }

    fn queues_alive(&self) -> bool {
        Arc::strong_count(&self.shared) > 1
    }

    /// Stops the port. Refused while any of its queue handles is alive (a worker could still
    /// poll it).
    pub fn stop(&mut self) -> Result<(), DpdkError> {
        if self.queues_alive() {
            return Err(DpdkError::new(
                format!("stop port {}: queue handles still alive", self.id),
                16,
            ));
        }
        if self.started {
            // SAFETY: started port and no queue handle alive, so no lcore polls it.
            let rc = unsafe { sys::rte_eth_dev_stop(self.id.0) };
            check(|| format!("rte_eth_dev_stop(port {})", self.id), rc)?;
            self.started = false;
        }
        Ok(())
    }

    /// Stops (if needed) and closes the port, releasing its queues and the mbufs the driver
    /// held in them.
    pub fn close(mut self) -> Result<(), DpdkError> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<(), DpdkError> {
        if self.closed {
            return Ok(());
        }
        self.stop()?;
        // SAFETY: stopped port, no queue handle alive.
        let rc = unsafe { sys::rte_eth_dev_close(self.id.0) };
        self.closed = true;
        check(|| format!("rte_eth_dev_close(port {})", self.id), rc)
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        if !self.queues_alive() {
            let _ = self.close_inner();
        }
    }
}

/// Link status of `port`: (up, speed in Mbps). Never blocks.
fn link_of(port: PortId) -> Result<(bool, u32), DpdkError> {
    let mut l = sys::rte_eth_link::default();
    // SAFETY: valid out pointer; the _nowait variant never blocks; DPDK validates the port id.
    let rc = unsafe { sys::rte_eth_link_get_nowait(port.0, &mut l) };
    check(|| format!("rte_eth_link_get_nowait(port {port})"), rc)?;
    Ok((
        u32::from(l.link_status()) == sys::RTE_ETH_LINK_UP,
        l.link_speed,
    ))
}

fn xstat_names(port: PortId) -> Result<Vec<String>, DpdkError> {
    // SAFETY: size query with a null array.
    let n = unsafe { sys::rte_eth_xstats_get_names(port.0, std::ptr::null_mut(), 0) };
    check(|| format!("rte_eth_xstats_get_names(port {port})"), n)?;
    let mut names = vec![sys::rte_eth_xstat_name::default(); n as usize];
    // SAFETY: `names` has room for `n` entries.
    let got = unsafe { sys::rte_eth_xstats_get_names(port.0, names.as_mut_ptr(), n as u32) };
    check(|| format!("rte_eth_xstats_get_names(port {port})"), got)?;
    Ok(names
        .iter()
        .take(got as usize)
        .map(|x| chars_to_string(&x.name))
        .collect())
}

impl StatsReader {
    /// The port read.
    pub fn port(&self) -> PortId {
        self.port
    }

    /// Basic counters.
    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid out pointer; DPDK validates the port id.
        let rc = unsafe { sys::rte_eth_stats_get(self.port.0, &mut s) };
        check(|| format!("rte_eth_stats_get(port {})", self.port), rc)?;
        Ok(PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// Extended counters as (name, value), names as the driver reports them.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>, DpdkError> {
        let n = self.xstat_names.len();
        let mut vals = vec![sys::rte_eth_xstat::default(); n];
        // SAFETY: `vals` has room for `n` entries.
        let got = unsafe { sys::rte_eth_xstats_get(self.port.0, vals.as_mut_ptr(), n as u32) };
        check(|| format!("rte_eth_xstats_get(port {})", self.port), got)?;
        Ok(vals
            .iter()
            .take((got as usize).min(n))
            .filter_map(|x| {
                self.xstat_names
                    .get(x.id as usize)
                    .map(|name| (name.clone(), x.value))
            })
            .collect())
    }

    /// Link status: (up, speed in Mbps).
    pub fn link(&self) -> Result<(bool, u32), DpdkError> {
        link_of(self.port)
    }
}

impl RxQueue {
    /// The port.
    pub fn port(&self) -> PortId {
        self.port
    }

    /// The queue index.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Receives up to a burst into `burst` (freeing anything it still held). Returns the count.
    #[inline]
    pub fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let (ptrs, room) = burst.reset_for_fill();
        // SAFETY: `ptrs` has room for `room` pointers; this handle is the queue's unique owner,
        // so no other thread polls it; the port is started (handles exist only after start and
        // the port cannot stop while they live).
        let n = unsafe { sys::shim_rte_eth_rx_burst(self.port.0, self.queue, ptrs, room) };
        burst.set_filled(usize::from(n));
        usize::from(n)
    }
}

impl TxQueue {
    /// The port.
    pub fn port(&self) -> PortId {
        self.port
    }

    /// The queue index.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Transmits everything in `buf`; what the queue does not accept is freed. Returns (sent
    /// packets, sent bytes, dropped packets).
    #[inline]
    pub fn flush(&mut self, buf: &mut TxBuffer) -> (u32, u64, u32) {
        let (port, queue) = (self.port.0, self.queue);
        buf.drain_with(|ptrs, n| {
            // SAFETY: `ptrs` holds `n` owned mbufs; tx_burst takes ownership of the first
            // `ret` of them; this handle is the queue's unique owner and the port is started.
            unsafe { sys::shim_rte_eth_tx_burst(port, queue, ptrs, n) }
        })
    }

    /// Transmits a received burst as it is (no copy into a transmit buffer); what the queue does
    /// not accept is freed. `bytes` is the total length of the burst's packets. Returns (sent
    /// packets, sent bytes, dropped packets).
    #[inline]
    pub fn send_burst(&mut self, burst: &mut Burst, bytes: u64) -> (u32, u64, u32) {
        let (port, queue) = (self.port.0, self.queue);
        let (sent, unsent_bytes, dropped) = burst.drain_with(|ptrs, n| {
            // SAFETY: `ptrs` holds `n` owned mbufs; tx_burst takes ownership of the first `ret`
            // of them; this handle is the queue's unique owner and the port is started.
            unsafe { sys::shim_rte_eth_tx_burst(port, queue, ptrs, n) }
        });
        (sent, bytes.saturating_sub(unsent_bytes), dropped)
    }

    /// Transmits what the queue accepts from `buf` and leaves the rest buffered (for senders
    /// that back off and retry, such as a traffic generator). Returns (sent packets, bytes).
    #[inline]
    pub fn send_some(&mut self, buf: &mut TxBuffer) -> (u32, u64) {
        let (port, queue) = (self.port.0, self.queue);
        buf.send_keep_rest(|ptrs, n| {
            // SAFETY: as in `flush`: the queue takes ownership of the first `ret` mbufs.
            unsafe { sys::shim_rte_eth_tx_burst(port, queue, ptrs, n) }
        })
    }
}
