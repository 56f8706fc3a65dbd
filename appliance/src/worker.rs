//! The run-to-completion loop of one worker lcore: rx burst -> pipeline -> per-port transmit
//! buffers -> tx burst. A buffer is sent as soon as it holds a full burst; partial bursts are
//! sent when a poll round finds no packet, or at the latest after the drain interval
//! (`workers.tx_drain_us`), as DPDK's l3fwd does.
use pipelines::flowlabel::LabelMode;
use pipelines::pipeline::{
    scan_valid, validate, BurstTarget, FilteredTarget, Generation, GenerationReader, PortIndex,
    Sink, Validation,
};
use pipelines::stats::StatsWriter;
use pipelines::wire::Parsed;
use pipelines::DropReason;
use pmd_glue::{Burst, Mbuf, Mempool, RxQueue, TxBuffer, TxQueue};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Whether each port can take packets (link up and started), indexed by pipeline port index.
/// The control thread stores, workers load (relaxed): no read-modify-write, no lock.
#[derive(Debug)]
pub struct Links(Box<[AtomicBool]>);

impl Links {
    /// `n` ports, all down until [`Links::set`] says otherwise.
    pub fn new(n: usize) -> Links {
        Links((0..n).map(|_| AtomicBool::new(false)).collect())
    }

    /// Records the state of port `i` (control thread).
    pub fn set(&self, i: usize, up: bool) {
        if let Some(l) = self.0.get(i) {
            l.store(up, Ordering::Relaxed);
        }
    }

    /// The last recorded state of `port` (false for unknown ports).
    #[inline]
    pub fn up(&self, port: PortIndex) -> bool {
        self.0
            .get(usize::from(port.0))
            .is_some_and(|l| l.load(Ordering::Relaxed))
    }
}

/// Everything one worker owns.
#[derive(Debug)]
pub struct Worker {
    /// Receive queues this worker polls, with the pipeline index of their port.
    pub rx: Vec<(PortIndex, RxQueue)>,
    /// This worker's transmit queue on every port (indexed by pipeline port index); `None`
    /// for ports nothing is sent to.
    pub tx: Vec<Option<TxQueue>>,
    /// The current configuration.
    pub generation: GenerationReader,
    /// This worker's counters.
    pub stats: StatsWriter,
    /// Set by the control thread to stop.
    pub stop: Arc<AtomicBool>,
    /// Partial transmit bursts wait at most this many TSC ticks.
    pub drain_ticks: u64,
    /// Indirect mbufs for mirror copies.
    pub clone_pool: Mempool,
    /// Port link states.
    pub links: Arc<Links>,
    /// The tunnel stage, when tunnels are configured.
    pub tunnel: Option<crate::tunnel_stage::TunnelStage>,
}

/// This worker's transmit side of one port: a buffer and the worker's own queue.
struct TxPort {
    port: PortIndex,
    buf: TxBuffer,
    queue: TxQueue,
}

impl TxPort {
    #[inline(never)]
    fn flush(&mut self, stats: &mut StatsWriter) {
        let (sent, bytes, dropped) = self.queue.flush(&mut self.buf);
        if sent > 0 {
            stats.tx(self.port, u64::from(sent), bytes);
        }
        if dropped > 0 {
            stats.drop(self.port, DropReason::TxQueueFull, u64::from(dropped));
        }
    }
}

/// A worker's transmit buffers and queues, per port (indexed by pipeline port index; `None`:
/// nothing is sent there).
pub struct TxPorts(Vec<Option<TxPort>>);

impl TxPorts {
    /// Buffers `pkt` for `port` (sending the buffer once full); counts a drop when the worker
    /// has no queue there.
    #[inline(always)]
    pub fn send(&mut self, port: PortIndex, pkt: Mbuf, stats: &mut StatsWriter) {
        let Some(Some(t)) = self.0.get_mut(usize::from(port.0)) else {
            stats.drop(port, DropReason::NoRoute, 1);
            return; // `pkt` drops here: back to its pool
        };
        if let Err(pkt) = t.buf.push(pkt) {
            // Cannot happen (a buffer is flushed as soon as it fills), but never lose a packet
            // silently.
            stats.drop(port, DropReason::TxQueueFull, 1);
            drop(pkt);
        }
        if t.buf.is_full() {
            t.flush(stats);
        }
    }
}

/// Transmit side of one worker: its ports, plus what mirror copies and tunnels need.
struct TxSide {
    ports: TxPorts,
    clone_pool: Mempool,
    links: Arc<Links>,
    tunnel: Option<crate::tunnel_stage::TunnelStage>,
}

impl TxSide {
    fn pending(&self) -> bool {
        self.ports.0.iter().flatten().any(|t| !t.buf.is_empty())
    }

    fn flush_all(&mut self, stats: &mut StatsWriter) {
        for t in self.ports.0.iter_mut().flatten() {
            if !t.buf.is_empty() {
                t.flush(stats);
            }
        }
    }
}

impl TxSide {
    /// A burst whose fate depends only on validation: drop (and count) the frames that fail
    /// the port's validation (labelling the others when the target labels IPv6 flows), then
    /// hand the received burst itself to the target's transmit
    /// queue, after whatever was already buffered for that port (order is kept). Same
    /// semantics as `Generation::process_burst` on a `burst_target`, without per-packet
    /// buffering.
    #[inline]
    fn forward_burst(
        &mut self,
        gen: &Generation,
        burst: &mut Burst,
        ingress: PortIndex,
        target: BurstTarget,
        stats: &mut StatsWriter,
    ) {
        let out = target.out;
        let received = burst.remaining() as u64;
        if target.flowlabel == LabelMode::Off {
            // Validation only reads: when every frame passes, the burst leaves as it came.
            let (invalid, bytes) = scan_valid(burst.as_slice(), target.validation);
            if invalid == 0 {
                stats.rx(ingress, received, bytes);
                self.send_kept(out, burst, bytes, stats);
                return;
            }
        }
        let (rx_bytes, kept_bytes) = keep_valid(burst, ingress, stats, |m, stats| {
            gen.check_burst_frame(m, target, stats)
        });
        stats.rx(ingress, received, rx_bytes);
        self.send_kept(out, burst, kept_bytes, stats);
    }

    /// A burst from a port with ingress filters to its `Generation::filtered_target` `t`:
    /// every frame is validated and classified; those the filters pass leave with the burst
    /// itself (after whatever was already buffered for `out`), the others went their own way
    /// (dropped and counted, redirected, mirrored). Same semantics as
    /// `Generation::process_burst`, without per-packet buffering for the common case.
    #[inline]
    fn filter_burst(
        &mut self,
        gen: &Generation,
        burst: &mut Burst,
        ingress: PortIndex,
        t: &FilteredTarget<'_>,
        stats: &mut StatsWriter,
    ) {
        let received = burst.remaining() as u64;
        let (mut rx_bytes, mut kept_bytes) = (0u64, 0u64);
        if t.whole_frames() {
            // One pass over the burst validates every frame and asks the hook's chain about
            // all of them at once (it reads frames safely, valid or not). When every frame is
            // valid and no member decides on any, the burst leaves as it came; otherwise the
            // invalid frames are dropped, the decided ones walk the hook, the rest stay.
            let s = t.sort(burst.as_slice());
            rx_bytes = s.bytes;
            if s.walk == 0 && s.invalid == 0 {
                kept_bytes = s.bytes;
            } else {
                let mut i = 0;
                burst.retain_owned(|m| {
                    let bit = if i < 64 { 1u64 << i } else { 0 };
                    i += 1;
                    if s.invalid & bit != 0 {
                        if let Err(reason) = validate(&m, Validation::Full) {
                            stats.drop(ingress, reason, 1);
                            return None;
                        }
                    }
                    if bit == 0 || s.walk & bit != 0 {
                        let kept = gen.walk_in_burst(m, ingress, t, stats, self);
                        if let Some(m) = &kept {
                            kept_bytes += u64::from(m.pkt_len());
                        }
                        return kept;
                    }
                    kept_bytes += u64::from(m.pkt_len());
                    Some(m)
                });
            }
            stats.rx(ingress, received, rx_bytes);
            if !burst.is_empty() {
                self.send_kept(t.out, burst, kept_bytes, stats);
            }
            return;
        }
        burst.retain_owned(|m| {
            let len = u64::from(m.pkt_len());
            rx_bytes += len;
            let kept = gen.classify_in_burst(m, ingress, t, stats, self);
            if let Some(m) = &kept {
                kept_bytes += u64::from(m.pkt_len());
            }
            kept
        });
        stats.rx(ingress, received, rx_bytes);
        if !burst.is_empty() {
            self.send_kept(t.out, burst, kept_bytes, stats);
        }
    }

    /// Sends what is left of `burst` (`bytes` in all) to `out`, after what is buffered there.
    #[inline]
    fn send_kept(
        &mut self,
        out: PortIndex,
        burst: &mut Burst,
        bytes: u64,
        stats: &mut StatsWriter,
    ) {
        let Some(Some(t)) = self.ports.0.get_mut(usize::from(out.0)) else {
            stats.drop(out, DropReason::NoRoute, burst.remaining() as u64);
            return; // the burst frees them at its next fill
        };
        if !t.buf.is_empty() {
            t.flush(stats);
        }
        let (sent, bytes, dropped) = t.queue.send_burst(burst, bytes);
        if sent > 0 {
            stats.tx(out, u64::from(sent), bytes);
        }
        if dropped > 0 {
            stats.drop(out, DropReason::TxQueueFull, u64::from(dropped));
        }
    }
}

impl Sink<Mbuf> for TxSide {
    #[inline(always)]
    fn send(&mut self, port: PortIndex, pkt: Mbuf, stats: &mut StatsWriter) {
        self.ports.send(port, pkt, stats);
    }

    fn send_tunnel(
        &mut self,
        port: PortIndex,
        pkt: Mbuf,
        parsed: &Parsed,
        iif: PortIndex,
        stats: &mut StatsWriter,
    ) {
        match &mut self.tunnel {
            Some(t) => t.encap(port, pkt, parsed, iif, &mut self.ports, stats),
            None => stats.drop(port, DropReason::NoRoute, 1),
        }
    }

    fn local(
        &mut self,
        port: PortIndex,
        pkt: Mbuf,
        parsed: &Parsed,
        stats: &mut StatsWriter,
    ) -> Option<Mbuf> {
        match &mut self.tunnel {
            Some(t) => t.local(port, pkt, parsed, &mut self.ports, stats),
            None => Some(pkt),
        }
    }

    #[inline]
    fn clone_packet(&mut self, pkt: &Mbuf) -> Option<Mbuf> {
        pkt.clone_indirect(&self.clone_pool)
    }

    #[inline]
    fn link_up(&self, port: PortIndex) -> bool {
        self.links.up(port)
    }
}

/// Wall-clock milliseconds from the TSC: one TSC read and one division, no system call.
struct Clock {
    tsc0: u64,
    unix_ms0: u64,
    ticks_per_ms: u64,
}

impl Clock {
    fn new() -> Clock {
        let unix_ms0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Clock {
            tsc0: pmd_glue::tsc(),
            unix_ms0,
            ticks_per_ms: (pmd_glue::tsc_hz() / 1000).max(1),
        }
    }

    #[inline]
    fn now_ms(&self) -> u64 {
        self.unix_ms0 + pmd_glue::tsc().wrapping_sub(self.tsc0) / self.ticks_per_ms
    }
}

impl Worker {
    /// Polls until `stop` is set, then flushes what is buffered. Returns 0.
    pub fn run(self) -> i32 {
        let Worker {
            mut rx,
            tx,
            mut generation,
            mut stats,
            stop,
            drain_ticks,
            clone_pool,
            links,
            tunnel,
        } = self;
        let mut tunnel_loop = tunnel.as_ref().map(|_| TunnelLoop {
            done: Vec::with_capacity(1024),
            delivered: Vec::with_capacity(1024),
        });
        let mut txs = TxSide {
            clone_pool,
            links,
            tunnel,
            ports: TxPorts(
                tx.into_iter()
                    .enumerate()
                    .map(|(i, q)| {
                        q.map(|queue| TxPort {
                            port: PortIndex(i as u16),
                            buf: TxBuffer::new(),
                            queue,
                        })
                    })
                    .collect(),
            ),
        };
        let mut burst = Burst::new();
        let clock = Clock::new();
        let mut last_drain = pmd_glue::tsc();
        while !stop.load(Ordering::Relaxed) {
            stats.set_now_ms(clock.now_ms());
            let gen = generation.current();
            // The generation's SA table, for the packets of this round.
            if let (Some(t), Some(ip)) = (txs.tunnel.as_mut(), gen.ipsec.as_ref()) {
                t.adopt(ip);
            }
            let mut round = 0u64;
            for (port, q) in rx.iter_mut() {
                let n = q.rx_burst(&mut burst);
                if n != 0 {
                    round += n as u64;
                    if let Some(t) = gen.burst_target(*port) {
                        txs.forward_burst(gen, &mut burst, *port, t, &mut stats);
                    } else if let Some(t) = gen.filtered_target(*port) {
                        txs.filter_burst(gen, &mut burst, *port, &t, &mut stats);
                    } else {
                        gen.process_burst(&mut burst, *port, &mut stats, &mut txs);
                    }
                }
            }
            if let Some(tl) = &mut tunnel_loop {
                round += tl.round(gen, &mut txs, &mut stats);
            }
            stats.poll(round);
            if round == 0 {
                txs.flush_all(&mut stats);
            } else if txs.pending() {
                let now = pmd_glue::tsc();
                if now.wrapping_sub(last_drain) >= drain_ticks {
                    txs.flush_all(&mut stats);
                    last_drain = now;
                }
            } else {
                continue;
            }
            // Restart the drain interval whenever the buffers were emptied.
            if !txs.pending() {
                last_drain = pmd_glue::tsc();
            }
        }
        // Stop: what is still in the crypto device comes back and goes on its way (or is
        // counted), so every mbuf returns to its pool.
        if let Some(tl) = &mut tunnel_loop {
            let gen = generation.current();
            if let (Some(t), Some(ip)) = (txs.tunnel.as_mut(), gen.ipsec.as_ref()) {
                t.adopt(ip);
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while txs.tunnel.as_ref().is_some_and(|t| t.in_flight() > 0)
                && std::time::Instant::now() < deadline
            {
                tl.round(gen, &mut txs, &mut stats);
            }
            tl.round(gen, &mut txs, &mut stats);
        }
        txs.flush_all(&mut stats);
        0
    }
}

/// What a worker keeps between polls of its crypto device: two buffers reused every round (no
/// allocation per packet).
struct TunnelLoop {
    done: Vec<crate::tunnel_stage::Completion>,
    delivered: Vec<(PortIndex, Mbuf)>,
}

impl TunnelLoop {
    /// One poll of the crypto device: completed operations leave (outbound) or enter their
    /// tunnel's ingress (inbound). Returns how many completed.
    #[inline(never)]
    fn round(&mut self, gen: &Generation, txs: &mut TxSide, stats: &mut StatsWriter) -> u64 {
        let Some(t) = txs.tunnel.as_mut() else {
            return 0;
        };
        t.poll(&mut self.done);
        let n = self.done.len() as u64;
        if n == 0 {
            return 0;
        }
        t.complete(&mut self.done, &mut self.delivered, &mut txs.ports, stats);
        for (port, m) in self.delivered.drain(..) {
            stats.rx(port, 1, u64::from(m.pkt_len()));
            gen.process_tunnel_rx(m, port, stats, txs);
        }
        n
    }
}

/// Keeps, in order, the frames of a burst received on `ingress` that `check` accepts, and
/// frees the others, counting each under the reason `check` gives; returns the received and
/// the kept bytes.
#[inline(always)]
fn keep_valid(
    burst: &mut Burst,
    ingress: PortIndex,
    stats: &mut StatsWriter,
    mut check: impl FnMut(&mut Mbuf, &mut StatsWriter) -> Result<(), DropReason>,
) -> (u64, u64) {
    let (mut rx_bytes, mut kept_bytes) = (0u64, 0u64);
    burst.retain(|m| {
        let len = u64::from(m.pkt_len());
        rx_bytes += len;
        match check(m, stats) {
            Ok(()) => {
                kept_bytes += len;
                true
            }
            Err(reason) => {
                stats.drop(ingress, reason, 1);
                false
            }
        }
    });
    (rx_bytes, kept_bytes)
}
