//! `appliance gen --port`: transmit generated frames through a DPDK port, paced to a target
//! rate or as fast as the port takes them, with progress once a second and a final rate.
//!
//! Like testpmd's txonly mode, frames are built once into templates (up to 8192 distinct
//! frames, cycled) and copied into fresh mbufs on the hot path.
use crate::config::Config;
use crate::gen::{FrameGenerator, GenOptions};
use crate::run::exit;
use pmd_glue::lcore;
use pmd_glue::{Eal, Mempool, Port, PortConfig as DevPortConfig, SocketId, TxBuffer};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_TEMPLATES: u64 = 8192;

/// Transmits `count` frames (0 = until interrupted) on `port_name`. Returns the exit code.
pub fn transmit(
    cfg: &Config,
    port_name: &str,
    opts: &GenOptions,
    count: u64,
    rate_pps: Option<f64>,
) -> i32 {
    let Some(pc) = cfg.ports.iter().find(|p| p.name == port_name) else {
        let names: Vec<_> = cfg.ports.iter().map(|p| p.name.as_str()).collect();
        eprintln!(
            "appliance gen: --port {port_name:?} is not a port of the configuration; ports are: {}",
            names.join(", ")
        );
        return exit::CONFIG;
    };
    if let Some(r) = rate_pps {
        if !(r.is_finite() && r > 0.0) {
            eprintln!("appliance gen: --rate-pps {r}: a positive number of frames per second");
            return exit::CONFIG;
        }
    }
    let mut fgen = match FrameGenerator::new(opts) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("appliance gen: {e}");
            return exit::CONFIG;
        }
    };
    let templates: Vec<Vec<u8>> = (0..if count == 0 {
        MAX_TEMPLATES
    } else {
        count.min(MAX_TEMPLATES)
    })
        .map(|_| {
            let mut b = Vec::new();
            fgen.next_frame(&mut b);
            b
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone());
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    let eal = match Eal::init("appliance-gen", &cfg.eal_args()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("appliance gen: {e}");
            return exit::STARTUP;
        }
    };
    let code = transmit_with_eal(cfg, pc, templates, count, rate_pps, &stop);
    if let Err(e) = eal.cleanup() {
        eprintln!("appliance gen: {e}");
        return if code == 0 { exit::LEAK } else { code };
    }
    code
}

fn transmit_with_eal(
    cfg: &Config,
    pc: &crate::config::PortConfig,
    templates: Vec<Vec<u8>>,
    count: u64,
    rate_pps: Option<f64>,
    stop: &Arc<AtomicBool>,
) -> i32 {
    let Some(&worker) = lcore::worker_lcores().first() else {
        eprintln!("appliance gen: eal.lcores must include a worker lcore");
        return exit::CONFIG;
    };
    let pool = match Mempool::pktmbuf(
        "gen_pool",
        cfg.mempool.mbufs,
        cfg.mempool.cache,
        cfg.mempool.data_room,
        SocketId::ANY,
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("appliance gen: {e}");
            return exit::STARTUP;
        }
    };
    let mut port = match Port::by_name(&pc.device) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("appliance gen: port {}: {e}", pc.name);
            return exit::STARTUP;
        }
    };
    let conf = DevPortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_desc: pc.rx_desc,
        tx_desc: pc.tx_desc,
        promiscuous: false,
        mtu: pc.mtu,
    };
    let queues = port
        .configure(&conf, &pool)
        .and_then(|_| port.start())
        .and_then(|_| port.take_queues());
    let (rxq, mut txq) = match queues {
        Ok((rx, tx)) => (rx, tx),
        Err(e) => {
            eprintln!("appliance gen: port {}: {e}", pc.name);
            return exit::STARTUP;
        }
    };
    drop(rxq);
    let Some(mut txq) = txq.pop() else {
        eprintln!("appliance gen: port {} has no transmit queue", pc.name);
        return exit::STARTUP;
    };

    let sent = Arc::new(AtomicU64::new(0));
    let sent_bytes = Arc::new(AtomicU64::new(0));
    let alloc_fail = Arc::new(AtomicU64::new(0));
    let (s2, b2, a2, stop2, pool2) = (
        sent.clone(),
        sent_bytes.clone(),
        alloc_fail.clone(),
        stop.clone(),
        pool.clone(),
    );
    let hz = pmd_glue::tsc_hz().max(1);
    let started = Instant::now();
    let job = lcore::launch(worker, move || {
        // Single writer of these three counters: plain load/store, no RMW.
        let bump =
            |c: &AtomicU64, n: u64| c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        let mut buf = TxBuffer::new();
        let mut i = 0usize;
        let mut total = 0u64;
        let t0 = pmd_glue::tsc();
        let ticks_per_frame = rate_pps.map(|r| hz as f64 / r);
        while !stop2.load(Ordering::Relaxed) && (count == 0 || total < count) {
            if let Some(tpf) = ticks_per_frame {
                let due = (pmd_glue::tsc().wrapping_sub(t0) as f64 / tpf) as u64;
                if due <= total + buf.len() as u64 {
                    pmd_glue::pause();
                    continue;
                }
            }
            while !buf.is_full() && (count == 0 || total + (buf.len() as u64) < count) {
                let Some(mut m) = pool2.alloc() else {
                    bump(&a2, 1);
                    break;
                };
                if !m.fill(&templates[i]) {
                    bump(&a2, 1);
                    break;
                }
                i = (i + 1) % templates.len();
                let _ = buf.push(m);
                if ticks_per_frame.is_some() {
                    break; // paced: one frame per due slot
                }
            }
            let (n, bytes) = txq.send_some(&mut buf);
            total += u64::from(n);
            bump(&s2, u64::from(n));
            bump(&b2, bytes);
        }
        drop(buf); // frees anything not sent
        0
    });
    let job = match job {
        Ok(j) => j,
        Err(e) => {
            eprintln!("appliance gen: {e}");
            return exit::STARTUP;
        }
    };
    let mut last = (Instant::now(), 0u64);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        let s = sent.load(Ordering::Relaxed);
        if now - last.0 >= Duration::from_secs(1) {
            let rate = (s - last.1) as f64 / (now - last.0).as_secs_f64();
            eprintln!("gen: {s} frames sent, {:.3} Mpps", rate / 1e6);
            last = (now, s);
        }
        if stop.load(Ordering::Relaxed) || (count != 0 && s >= count) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let result = job.wait();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let (s, b) = (
        sent.load(Ordering::Relaxed),
        sent_bytes.load(Ordering::Relaxed),
    );
    println!(
        "gen: sent {s} frames, {b} bytes on port {} in {secs:.3} s: {:.3} Mpps, {:.3} Gbit/s (allocation failures: {})",
        pc.name,
        s as f64 / secs / 1e6,
        (b as f64 + 24.0 * s as f64) * 8.0 / secs / 1e9,
        alloc_fail.load(Ordering::Relaxed)
    );
    if let Err(p) = port.close() {
        eprintln!("appliance gen: {p}");
    }
    let (in_use, available, size) = (pool.in_use(), pool.available(), pool.size());
    drop(pool);
    println!("gen: mempool gen_pool: {available}/{size} free after shutdown");
    match result {
        Err(p) => {
            eprintln!("appliance gen: {p}");
            exit::WORKER_PANIC
        }
        Ok(_) if in_use > 0 => {
            eprintln!("appliance gen: LEAK: {in_use} mbufs not returned");
            exit::LEAK
        }
        Ok(_) => 0,
    }
}
