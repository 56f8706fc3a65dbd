//! The run-to-completion loop of one worker lcore: rx burst -> pipeline -> per-port transmit
//! buffers -> tx burst, with a drain timer for partial bursts.
use pipelines::pipeline::{GenerationReader, PortIndex, Sink};
use pipelines::stats::StatsWriter;
use pipelines::DropReason;
use pmd_glue::{Burst, Mbuf, RxQueue, TxBuffer, TxQueue};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
}

/// Transmit side of one worker: a buffer and a queue per port.
struct TxSide {
    bufs: Vec<TxBuffer>,
    queues: Vec<Option<TxQueue>>,
}

impl TxSide {
    #[inline]
    fn flush(&mut self, port: usize, stats: &mut StatsWriter) {
        let (Some(buf), Some(Some(q))) = (self.bufs.get_mut(port), self.queues.get_mut(port))
        else {
            return;
        };
        let (sent, bytes, dropped) = q.flush(buf);
        let p = PortIndex(port as u16);
        if sent > 0 {
            stats.tx(p, u64::from(sent), bytes);
        }
        if dropped > 0 {
            stats.drop(p, DropReason::TxQueueFull, u64::from(dropped));
        }
    }

    fn flush_all(&mut self, stats: &mut StatsWriter) {
        for p in 0..self.bufs.len() {
            if !self.bufs[p].is_empty() {
                self.flush(p, stats);
            }
        }
    }
}

/// Adapter handing pipeline output to the transmit buffers.
struct WorkerSink<'a> {
    tx: &'a mut TxSide,
}

impl Sink<Mbuf> for WorkerSink<'_> {
    #[inline]
    fn send(&mut self, port: PortIndex, pkt: Mbuf, stats: &mut StatsWriter) {
        let i = usize::from(port.0);
        let has_queue = matches!(self.tx.queues.get(i), Some(Some(_)));
        let Some(buf) = self.tx.bufs.get_mut(i).filter(|_| has_queue) else {
            stats.drop(port, DropReason::NoRoute, 1);
            return; // `pkt` drops here: back to its pool
        };
        if let Err(pkt) = buf.push(pkt) {
            // Cannot happen (we flush at 32), but never lose a packet silently.
            stats.drop(port, DropReason::TxQueueFull, 1);
            drop(pkt);
        }
        if self.tx.bufs[i].is_full() {
            self.tx.flush(i, stats);
        }
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
        } = self;
        let mut txs = TxSide {
            bufs: (0..tx.len()).map(|_| TxBuffer::new()).collect(),
            queues: tx,
        };
        let mut burst = Burst::new();
        let mut last_drain = pmd_glue::tsc();
        while !stop.load(Ordering::Relaxed) {
            let gen = generation.current();
            let mut round = 0u64;
            for (port, q) in rx.iter_mut() {
                let n = q.rx_burst(&mut burst);
                if n == 0 {
                    continue;
                }
                round += n as u64;
                let mut bytes = 0u64;
                let mut sink = WorkerSink { tx: &mut txs };
                while let Some(m) = burst.pop_front() {
                    bytes += u64::from(m.pkt_len());
                    gen.process(m, *port, &mut stats, &mut sink);
                }
                stats.rx(*port, n as u64, bytes);
            }
            stats.poll(round);
            let now = pmd_glue::tsc();
            if round == 0 || now.wrapping_sub(last_drain) >= drain_ticks {
                txs.flush_all(&mut stats);
                last_drain = now;
            }
        }
        txs.flush_all(&mut stats);
        0
    }
}
