//! Real DPDK, one EAL per test binary: the virtual devices the appliance relies on load, a
//! net_ring port loops packets back through rx/tx bursts, mbuf ownership and clones behave,
//! and every mbuf is back in its pool at the end.
use pmd_glue::lcore;
use pmd_glue::{cryptodev, Burst, Eal, Mempool, Port, PortConfig, SocketId, TxBuffer};

fn eal_args(dir: &std::path::Path) -> Vec<String> {
    let pcap_in = dir.join("in.pcap");
    // A tiny valid pcap (one 60-byte frame) for net_pcap to read.
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&60u32.to_le_bytes());
    f.extend_from_slice(&60u32.to_le_bytes());
    f.extend_from_slice(&[0xffu8; 60]);
    std::fs::write(&pcap_in, f).unwrap();
    let prefix = format!("pmdglue-test-{}", std::process::id());
    [
        "-l",
        "0-1",
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-shconf",
        "--file-prefix",
        &prefix,
        "--log-level=error",
        "--vdev",
        "net_null0",
        "--vdev",
        "net_ring0",
        "--vdev",
        &format!(
            "net_pcap0,rx_pcap={},tx_pcap={}",
            pcap_in.display(),
            dir.join("out.pcap").display()
        ),
        "--vdev",
        "net_tap0,iface=pmdglue_tap0",
        "--vdev",
        "crypto_aesni_mb0",
        "--vdev",
        "crypto_openssl0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn dpdk_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let eal = Eal::init("pmd-glue-test", &eal_args(dir.path())).expect("EAL init with vdevs");
    assert!(matches!(
        Eal::init("again", &["-l", "0"]),
        Err(pmd_glue::eal::EalError::AlreadyInitialized)
    ));
    assert!(
        pmd_glue::dpdk_version().starts_with("DPDK 22.11"),
        "{}",
        pmd_glue::dpdk_version()
    );
    assert_eq!(lcore::worker_lcores().len(), 1);

    // Every virtual device the appliance documents is loadable.
    let mut ports = Vec::new();
    for name in ["net_null0", "net_ring0", "net_pcap0", "net_tap0"] {
        let p = Port::by_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let info = p.info().unwrap();
        assert_eq!(info.name, name);
        assert!(info.driver.starts_with("net_"), "{}", info.driver);
        ports.push(p);
    }
    assert!(Port::by_name("net_nonexistent7").is_err());
    let crypto: Vec<String> = cryptodev::list().into_iter().map(|c| c.driver).collect();
    assert!(crypto.iter().any(|d| d == "crypto_aesni_mb"), "{crypto:?}");
    assert!(crypto.iter().any(|d| d == "crypto_openssl"), "{crypto:?}");

    // Workers: a return value comes back; a panic is caught at the FFI boundary.
    let w = lcore::worker_lcores()[0];
    let job = lcore::launch(w, || 7).expect("launch");
    assert_eq!(job.wait(), Ok(7));
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {})); // the panic below is expected: keep the log clean
    let job = lcore::launch(w, || panic!("boom on purpose")).expect("launch");
    let err = job.wait().expect_err("panic is reported");
    std::panic::set_hook(quiet);
    assert_eq!(err.lcore, w);
    assert!(err.message.contains("boom on purpose"), "{err}");
    let job = lcore::launch(w, || lcore::current().map(|l| l.0 as i32).unwrap_or(-1)).unwrap();
    assert_eq!(
        job.wait(),
        Ok(w.0 as i32),
        "closure runs on the worker lcore"
    );
    assert!(
        lcore::launch(lcore::main_lcore(), || 0).is_err(),
        "main lcore is not a worker"
    );

    let pool = Mempool::pktmbuf("test_pool", 2047, 0, 2176, SocketId::ANY).expect("pool");
    let clones =
        Mempool::pktmbuf("clone_pool", 1023, 0, 128 + 256, SocketId::ANY).expect("clone pool");
    assert_eq!(pool.size(), 2047);
    assert!(pool.is_full());

    // Mbuf ownership, bytes and clones.
    {
        let mut m = pool.alloc().expect("alloc");
        assert!(m.fill(&[0xa5; 100]));
        assert_eq!(m.pkt_len(), 100);
        assert_eq!(m.data(), &[0xa5; 100][..]);
        m.data_mut().unwrap()[0] = 1;
        let c = m.clone_indirect(&clones).expect("clone");
        assert_eq!(c.data()[0], 1);
        assert!(m.data_mut().is_none(), "shared bytes must not be writable");
        assert!(!c.is_exclusive());
        assert_eq!(pool.in_use(), 1);
        assert_eq!(clones.in_use(), 1);
        drop(m);
        assert_eq!(pool.in_use(), 1, "the clone keeps the direct buffer alive");
        assert_eq!(c.data()[0], 1);
        drop(c);
        assert!(pool.is_full() && clones.is_full());
        let mut m = pool.alloc().unwrap();
        assert!(m.prepend(10).is_some());
        assert!(m.append(20).is_some());
        assert_eq!(m.pkt_len(), 30);
        assert!(m.adj(5));
        assert!(m.trim(5));
        assert_eq!(m.pkt_len(), 20);
        // Both ends at once, against the buffer's edges; the same as the four steps.
        use pipelines::Packet;
        let (head, room) = (m.headroom(), m.tailroom());
        m.data_mut().unwrap().copy_from_slice(&[7; 20]);
        let d = m.reframe(4, -6).expect("grow in front, shrink at the end");
        assert_eq!(d.len(), 18);
        assert_eq!(&d[4..], &[7; 14][..]);
        assert_eq!(
            (m.headroom(), m.tailroom(), m.pkt_len()),
            (head - 4, room + 6, 18)
        );
        assert!(m.reframe(-2, 3).is_some());
        assert_eq!((m.data_len(), m.pkt_len()), (19, 19));
        let (head, room) = (m.headroom(), m.tailroom());
        assert!(
            m.reframe(head as isize + 1, 0).is_none(),
            "past the headroom"
        );
        assert!(
            m.reframe(0, room as isize + 1).is_none(),
            "past the tailroom"
        );
        assert!(m.reframe(-20, 0).is_none(), "more than the data");
        assert_eq!((m.headroom(), m.tailroom(), m.pkt_len()), (head, room, 19));
        let d = m
            .reframe(head as isize, room as isize)
            .expect("the whole buffer");
        assert_eq!(d.len(), usize::from(head + 19 + room));
        let c = m.clone_indirect(&clones).unwrap();
        assert!(m.reframe(0, 0).is_none(), "shared bytes are not reframed");
        drop(c);
    }
    assert!(pool.is_full());

    // net_ring loops transmitted packets back to its receive side.
    let mut ring = ports.remove(1);
    assert_eq!(ring.info().unwrap().name, "net_ring0");
    let conf = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_desc: 256,
        tx_desc: 256,
        promiscuous: true,
        mtu: None,
    };
    ring.configure(&conf, &pool).expect("configure net_ring0");
    ring.start().unwrap();
    let (mut rxq, mut txq) = ring.take_queues().unwrap();
    assert!(ring.take_queues().is_err(), "queues are handed out once");
    let mut buf = TxBuffer::new();
    fill_numbered(&pool, &mut buf);
    assert!(buf.is_full());
    let extra = pool.alloc().unwrap();
    let extra = buf
        .push(extra)
        .expect_err("full buffer hands the packet back");
    drop(extra);
    let (sent, bytes, dropped) = txq[0].flush(&mut buf);
    assert_eq!((sent, bytes, dropped), (32, 32 * 64, 0));
    let mut burst = Burst::new();
    let n = rxq[0].rx_burst(&mut burst);
    assert_eq!(n, 32);
    let first = burst.pop_front().unwrap();
    assert_eq!(first.data(), &[0u8; 64][..]);
    drop(first);
    assert_eq!(burst.remaining(), 31);
    // Burst-level path: keep the even-numbered frames and transmit the burst itself.
    let n = rxq[0].rx_burst(&mut burst);
    assert_eq!(n, 0, "ring drained");
    fill_numbered(&pool, &mut buf);
    assert_eq!(txq[0].flush(&mut buf), (32, 32 * 64, 0));
    assert_eq!(rxq[0].rx_burst(&mut burst), 32);
    burst.retain(|m| m.data()[0] % 2 == 0);
    assert_eq!(burst.remaining(), 16);
    assert_eq!(
        pool.in_use(),
        16,
        "dropped frames went back to the pool at once"
    );
    assert_eq!(txq[0].send_burst(&mut burst, 16 * 64), (16, 16 * 64, 0));
    assert!(burst.is_empty());
    assert_eq!(rxq[0].rx_burst(&mut burst), 16);
    let firsts: Vec<u8> = burst.by_ref().map(|m| m.data()[0]).collect();
    assert_eq!(
        firsts,
        (0..32u8).step_by(2).collect::<Vec<_>>(),
        "order kept"
    );
    assert!(pool.is_full());
    // Owned variant: frames divisible by 3 leave the burst (kept aside here, as a redirect
    // would), odd ones are dropped, the rest stay in order.
    fill_numbered(&pool, &mut buf);
    assert_eq!(txq[0].flush(&mut buf), (32, 32 * 64, 0));
    assert_eq!(rxq[0].rx_burst(&mut burst), 32);
    let mut aside = Vec::new();
    burst.retain_owned(|m| match m.data()[0] {
        b if b % 3 == 0 => {
            aside.push(m);
            None
        }
        b if b % 2 == 1 => None,
        _ => Some(m),
    });
    let kept: Vec<u8> = (0..32u8).filter(|b| b % 3 != 0 && b % 2 == 0).collect();
    assert_eq!(burst.remaining(), kept.len());
    assert_eq!(aside.len(), 11);
    assert_eq!(
        pool.in_use(),
        (kept.len() + aside.len()) as u32,
        "dropped frames are freed"
    );
    let firsts: Vec<u8> = burst.by_ref().map(|m| m.data()[0]).collect();
    assert_eq!(firsts, kept, "order kept");
    drop(aside);
    assert!(pool.is_full());
    let _ = rxq[0].rx_burst(&mut burst);
    // Refill the burst for the drop-while-held check below.
    fill_numbered(&pool, &mut buf);
    txq[0].flush(&mut buf);
    assert_eq!(rxq[0].rx_burst(&mut burst), 32);
    drop(burst.pop_front());
    assert_eq!(burst.remaining(), 31);

    // Stopping is refused while queue handles live.
    assert!(ring.stop().is_err());
    drop(burst); // frees the 31 left
    drop(rxq);
    drop(txq);
    ring.close().expect("close");
    assert!(pool.is_full(), "in use: {}", pool.in_use());

    // Cleanup is refused while handles are alive, then succeeds.
    drop(clones);
    assert!(matches!(
        Eal::init("x", &["-l", "0"]),
        Err(pmd_glue::eal::EalError::AlreadyInitialized)
    ));
    drop(ports); // closes net_null0, net_pcap0, net_tap0
    drop(pool);
    eal.cleanup().expect("EAL cleanup with nothing alive");
}

/// Fills `buf` with 32 frames from `pool`, frame `i` of 64 bytes all `i`.
fn fill_numbered(pool: &Mempool, buf: &mut TxBuffer) {
    for i in 0..32u8 {
        let mut m = pool.alloc().unwrap();
        assert!(m.fill(&[i; 64]));
        buf.push(m).unwrap();
    }
}
