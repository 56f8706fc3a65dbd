//! Real DPDK, one EAL per test binary: the lookaside cryptodev API on crypto_aesni_mb (Intel
//! ipsec-mb) and crypto_openssl, checked against independent references: AES-GCM known answers
//! (McGrew–Viega test cases, NIST CAVP), RustCrypto's AES-GCM, AES-CBC and HMAC-SHA256 over
//! ESP-shaped packets, and the ownership rules (every mbuf and op comes back, refused pushes hand
//! the mbuf back, sessions live while operations use them).
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hmac::{Hmac, Mac};
use pmd_glue::cryptodev::{
    self, CipherDir, CryptoDev, CryptoDevConfig, CryptoJob, CryptoQueue, CryptoStatus, Session,
    SessionSpec,
};
use pmd_glue::{Eal, Mempool, SocketId};
use sha2::Sha256;
use std::collections::HashMap;
use std::time::Duration;

const DEVICES: [&str; 2] = ["crypto_aesni_mb0", "crypto_openssl0"];
const WAIT: Duration = Duration::from_secs(10);

fn eal_args() -> Vec<String> {
    let prefix = format!("pmdglue-crypto-{}", std::process::id());
    [
        "-l",
        "0-1",
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        "--no-shconf",
        "--file-prefix",
        &prefix,
        "--log-level=error",
        "--vdev",
        "crypto_aesni_mb0",
        "--vdev",
        "crypto_openssl0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "{s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A small deterministic generator for test data (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn arr16(b: &[u8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..b.len()].copy_from_slice(b);
    a
}

/// Pushes one packet and waits for it: (bytes after the operation, status).
fn run_one(
    q: &mut CryptoQueue,
    pool: &Mempool,
    s: &Session,
    bytes: &[u8],
    job: &CryptoJob,
    user: u128,
) -> (Vec<u8>, CryptoStatus) {
    let mut m = pool.alloc().expect("mbuf");
    assert!(m.fill(bytes));
    q.push(m, s, job, user).expect("push accepted");
    assert_eq!(q.in_flight(), 1);
    let mut got = Vec::new();
    let left = q.drain(WAIT, |m, st, user| got.push((m.data().to_vec(), st, user)));
    assert_eq!(left, 0, "the device returned the operation");
    assert_eq!(q.in_flight(), 0);
    assert_eq!(got.len(), 1);
    let (data, st, back) = got.pop().unwrap();
    assert_eq!(back, user, "user value comes back");
    (data, st)
}

fn gcm_ref(key: &[u8], nonce: &[u8], aad: &[u8], pt: &[u8]) -> Vec<u8> {
    let payload = Payload { msg: pt, aad };
    match key.len() {
        16 => Aes128Gcm::new_from_slice(key)
            .unwrap()
            .encrypt(nonce.try_into().unwrap(), payload)
            .unwrap(),
        32 => Aes256Gcm::new_from_slice(key)
            .unwrap()
            .encrypt(nonce.try_into().unwrap(), payload)
            .unwrap(),
        n => panic!("key length {n}"),
    }
}

fn cbc_encrypt_ref(key: &[u8], iv: &[u8], pt: &[u8]) -> Vec<u8> {
    let mut buf = pt.to_vec();
    let n = buf.len();
    match key.len() {
        16 => {
            cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv)
                .unwrap()
                .encrypt_padded::<NoPadding>(&mut buf, n)
                .unwrap();
        }
        32 => {
            cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv)
                .unwrap()
                .encrypt_padded::<NoPadding>(&mut buf, n)
                .unwrap();
        }
        n => panic!("key length {n}"),
    }
    buf
}

fn cbc_decrypt_ref(key: &[u8], iv: &[u8], ct: &[u8]) -> Vec<u8> {
    let mut buf = ct.to_vec();
    match key.len() {
        16 => {
            cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
                .unwrap()
                .decrypt_padded::<NoPadding>(&mut buf)
                .unwrap();
        }
        32 => {
            cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
                .unwrap()
                .decrypt_padded::<NoPadding>(&mut buf)
                .unwrap();
        }
        n => panic!("key length {n}"),
    }
    buf
}

fn hmac_sha256_128(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes()[..16].to_vec()
}

/// A known-answer vector: key, 12-byte IV, plaintext, AAD, ciphertext, tag.
struct Kat {
    name: &'static str,
    key: &'static str,
    iv: &'static str,
    pt: &'static str,
    aad: &'static str,
    ct: &'static str,
    tag: &'static str,
}

const MV_P: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                    1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";

/// AES-GCM known answers with AAD of at most 16 bytes (what an ESP operation carries).
const GCM_KATS: &[Kat] = &[
    // NIST CAVP gcmEncryptExtIV128.rsp, [Keylen=128, IVlen=96, PTlen=128, AADlen=128,
    // Taglen=128] Count 0.
    Kat {
        name: "CAVP AES-128 AAD 16",
        key: "c939cc13397c1d37de6ae0e1cb7c423c",
        iv: "b3d8cc017cbb89b39e0f67e2",
        pt: "c3b3c41f113a31b73d9a5cd432103069",
        aad: "24825602bd12a984e0092d3e448eda5f",
        ct: "93fe7d9e9bfd10348a5606e5cafa7354",
        tag: "0032a1dc85f1c9786925a2e71d8272dd",
    },
    // NIST CAVP gcmEncryptExtIV256.rsp, [Keylen=256, IVlen=96, PTlen=128, AADlen=128,
    // Taglen=128] Count 0.
    Kat {
        name: "CAVP AES-256 AAD 16",
        key: "92e11dcdaa866f5ce790fd24501f92509aacf4cb8b1339d50c9c1240935dd08b",
        iv: "ac93a1a6145299bde902f21a",
        pt: "2d71bcfa914e4ac045b2aa60955fad24",
        aad: "1e0889016f67601c8ebea4943bc23ad6",
        ct: "8995ae2e6df3dbf96fac7b7137bae67f",
        tag: "eca5aa77d51d4a0a14d9c51e1da474ab",
    },
    // McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", Test Case 3.
    Kat {
        name: "McGrew-Viega test case 3 (AES-128)",
        key: "feffe9928665731c6d6a8f9467308308",
        iv: "cafebabefacedbaddecaf888",
        pt: MV_P,
        aad: "",
        ct: "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
             21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
        tag: "4d5c2af327cd64a62cf35abd2ba6fab4",
    },
    // McGrew & Viega, Test Case 15 (AES-256).
    Kat {
        name: "McGrew-Viega test case 15 (AES-256)",
        key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        iv: "cafebabefacedbaddecaf888",
        pt: MV_P,
        aad: "",
        ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
        tag: "b094dac5d93471bdec1a502270e3cc6c",
    },
];

/// GCM known answers, bit-exact, at an offset behind a header the device must not touch; then
/// decryption restores the plaintext and any flipped tag or ciphertext bit fails verification.
fn gcm_known_answers(dev: &CryptoDev, q: &mut CryptoQueue, pool: &Mempool) {
    const HDR: usize = 24;
    for kat in GCM_KATS {
        let (key, iv, pt, aad, ct, tag) = (
            hex(kat.key),
            hex(kat.iv),
            hex(kat.pt),
            hex(kat.aad),
            hex(kat.ct),
            hex(kat.tag),
        );
        let what = format!("{}: {}", dev.name(), kat.name);
        // The reference agrees with the published vector (so it is fit for the random tests).
        assert_eq!(gcm_ref(&key, &iv, &aad, &pt), [&ct[..], &tag[..]].concat());
        let spec = |dir| SessionSpec::AesGcm {
            key: &key,
            dir,
            aad_len: aad.len() as u16,
            digest_len: 16,
        };
        let enc = dev.session(&spec(CipherDir::Encrypt)).expect(&what);
        let dec = dev.session(&spec(CipherDir::Decrypt)).expect(&what);
        let mut pkt = vec![0xa5u8; HDR];
        pkt.extend_from_slice(&pt);
        pkt.extend_from_slice(&[0x5a; 16 + 8]);
        let job = CryptoJob {
            cipher_offset: HDR as u32,
            cipher_len: pt.len() as u32,
            digest_offset: (HDR + pt.len()) as u32,
            iv: arr16(&iv),
            aad: arr16(&aad),
            ..Default::default()
        };
        let (out, st) = run_one(q, pool, &enc, &pkt, &job, 0xfeed_0000 + pt.len() as u128);
        assert_eq!(st, CryptoStatus::Success, "{what}");
        assert_eq!(&out[..HDR], &[0xa5; HDR][..], "{what}: header untouched");
        assert_eq!(&out[HDR..HDR + pt.len()], &ct[..], "{what}: ciphertext");
        assert_eq!(&out[HDR + pt.len()..][..16], &tag[..], "{what}: tag");
        assert_eq!(
            &out[HDR + pt.len() + 16..],
            &[0x5a; 8][..],
            "{what}: bytes after the tag"
        );

        let (back, st) = run_one(q, pool, &dec, &out, &job, 0xfeed_0000 + pt.len() as u128);
        assert_eq!(st, CryptoStatus::Success, "{what}: decrypt");
        assert_eq!(&back[HDR..HDR + pt.len()], &pt[..], "{what}: round trip");
        for bit in [0, 7, 8 * 15 + 3] {
            let mut bad = out.clone();
            bad[HDR + pt.len() + bit / 8] ^= 1 << (bit % 8);
            let (_, st) = run_one(q, pool, &dec, &bad, &job, 0xfeed_0000 + pt.len() as u128);
            assert_eq!(
                st,
                CryptoStatus::AuthFailed,
                "{what}: tag bit {bit} flipped"
            );
        }
        let mut bad = out.clone();
        bad[HDR + pt.len() - 1] ^= 0x80;
        let (_, st) = run_one(q, pool, &dec, &bad, &job, 0xfeed_0000 + pt.len() as u128);
        assert_eq!(
            st,
            CryptoStatus::AuthFailed,
            "{what}: ciphertext bit flipped"
        );
        if !aad.is_empty() {
            let mut j = job;
            j.aad[0] ^= 1;
            let (_, st) = run_one(q, pool, &dec, &out, &j, 0xfeed_0000 + pt.len() as u128);
            assert_eq!(st, CryptoStatus::AuthFailed, "{what}: AAD bit flipped");
        }
    }
}

/// An ESP packet in tunnel mode as the tunnel stage builds it (RFC 4303 §2, RFC 4106 §3 for GCM,
/// RFC 4868 / RFC 3602 for CBC + HMAC): `outer` header bytes, ESP header (SPI, sequence), IV,
/// payload (already padded to the cipher's block size), ICV space, and 8 bytes that no
/// operation may touch.
struct EspPacket {
    bytes: Vec<u8>,
    outer: usize,
    iv_len: usize,
    payload: usize,
}

const ICV: usize = 16;

impl EspPacket {
    fn new(rng: &mut Rng, outer: usize, iv_len: usize, payload: usize) -> EspPacket {
        let mut bytes = vec![0x45u8; outer];
        bytes.extend_from_slice(&rng.bytes(8 + iv_len + payload));
        bytes.extend_from_slice(&[0u8; ICV]);
        // Bytes after the ICV (not ESP's) show a device writing past the ranges it was given.
        bytes.extend_from_slice(&[0xee; 8]);
        EspPacket {
            bytes,
            outer,
            iv_len,
            payload,
        }
    }
    fn esp(&self) -> std::ops::Range<usize> {
        self.outer..self.outer + 8
    }
    fn iv(&self) -> std::ops::Range<usize> {
        self.outer + 8..self.outer + 8 + self.iv_len
    }
    fn payload(&self) -> std::ops::Range<usize> {
        let s = self.outer + 8 + self.iv_len;
        s..s + self.payload
    }
    fn icv(&self) -> std::ops::Range<usize> {
        let s = self.payload().end;
        s..s + ICV
    }
}

/// One SA for the ESP tests: keys, the device sessions, and how to build jobs and references.
struct Sa {
    gcm: bool,
    key: Vec<u8>,
    auth_key: Vec<u8>,
    salt: [u8; 4],
    aad_len: usize,
    enc: Session,
    dec: Session,
}

impl Sa {
    fn new_gcm(dev: &CryptoDev, rng: &mut Rng, key_len: usize, aad_len: usize) -> Sa {
        let key = rng.bytes(key_len);
        let mk = |dir| {
            dev.session(&SessionSpec::AesGcm {
                key: &key,
                dir,
                aad_len: aad_len as u16,
                digest_len: ICV as u16,
            })
            .unwrap_or_else(|e| panic!("{}: {e}", dev.name()))
        };
        let (enc, dec) = (mk(CipherDir::Encrypt), mk(CipherDir::Decrypt));
        let salt = (rng.next() as u32).to_be_bytes();
        Sa {
            gcm: true,
            key,
            auth_key: Vec::new(),
            salt,
            aad_len,
            enc,
            dec,
        }
    }

    fn new_cbc(dev: &CryptoDev, rng: &mut Rng, key_len: usize) -> Sa {
        let key = rng.bytes(key_len);
        let auth_key = rng.bytes(32);
        let mk = |dir| {
            dev.session(&SessionSpec::AesCbcHmacSha256 {
                cipher_key: &key,
                auth_key: &auth_key,
                dir,
                digest_len: ICV as u16,
            })
            .unwrap_or_else(|e| panic!("{}: {e}", dev.name()))
        };
        let (enc, dec) = (mk(CipherDir::Encrypt), mk(CipherDir::Decrypt));
        Sa {
            gcm: false,
            key,
            auth_key,
            salt: [0; 4],
            aad_len: 0,
            enc,
            dec,
        }
    }

    fn iv_len(&self) -> usize {
        if self.gcm {
            8
        } else {
            16
        }
    }

    fn packet(&self, rng: &mut Rng, blocks: usize) -> EspPacket {
        let outer = 20 + 20 * rng.below(2) as usize; // IPv4 or a longer header
        EspPacket::new(rng, outer, self.iv_len(), 16 * blocks)
    }

    /// GCM AAD (RFC 4106 §5): SPI || sequence number (8 bytes), or SPI || ESN high || low (12).
    fn aad(&self, p: &EspPacket) -> Vec<u8> {
        let esp = &p.bytes[p.esp()];
        if self.aad_len == 12 {
            [&esp[..4], &[0, 0, 0, 1], &esp[4..]].concat()
        } else {
            esp.to_vec()
        }
    }

    fn job(&self, p: &EspPacket) -> CryptoJob {
        let iv = &p.bytes[p.iv()];
        let mut job = CryptoJob {
            cipher_offset: p.payload().start as u32,
            cipher_len: p.payload as u32,
            digest_offset: p.icv().start as u32,
            ..Default::default()
        };
        if self.gcm {
            // RFC 4106 §4: nonce = salt || IV.
            job.iv[..4].copy_from_slice(&self.salt);
            job.iv[4..12].copy_from_slice(iv);
            let aad = self.aad(p);
            job.aad[..aad.len()].copy_from_slice(&aad);
        } else {
            job.iv.copy_from_slice(iv);
            // RFC 4303 §3.3.2: the ICV covers the ESP header, IV and ciphertext.
            job.auth_offset = p.esp().start as u32;
            job.auth_len = (p.icv().start - p.esp().start) as u32;
        }
        job
    }

    /// The packet after outbound processing, computed independently.
    fn encrypted(&self, p: &EspPacket) -> Vec<u8> {
        let mut out = p.bytes.clone();
        let pt = &p.bytes[p.payload()];
        if self.gcm {
            let nonce = [&self.salt[..], &p.bytes[p.iv()]].concat();
            let ct = gcm_ref(&self.key, &nonce, &self.aad(p), pt);
            out[p.payload().start..p.icv().end].copy_from_slice(&ct);
        } else {
            let ct = cbc_encrypt_ref(&self.key, &p.bytes[p.iv()], pt);
            out[p.payload()].copy_from_slice(&ct);
            let icv = hmac_sha256_128(&self.auth_key, &out[p.esp().start..p.icv().start]);
            out[p.icv()].copy_from_slice(&icv);
        }
        out
    }
}

/// ESP-shaped packets of random sizes through the device and back, compared with RustCrypto;
/// bit flips in the authenticated header, the ciphertext or the ICV fail verification.
fn esp_vs_reference(dev: &CryptoDev, q: &mut CryptoQueue, pool: &Mempool, rng: &mut Rng) {
    let sas = [
        Sa::new_gcm(dev, rng, 16, 8),
        Sa::new_gcm(dev, rng, 32, 12),
        Sa::new_cbc(dev, rng, 16),
        Sa::new_cbc(dev, rng, 32),
    ];
    for (i, sa) in sas.iter().enumerate() {
        let what = |s: &str| {
            format!(
                "{}: SA {i} ({}, {}-byte key): {s}",
                dev.name(),
                if sa.gcm { "GCM" } else { "CBC+HMAC" },
                sa.key.len()
            )
        };
        for n in 0..8u64 {
            let blocks = 1 + rng.below(90) as usize;
            let p = sa.packet(rng, blocks);
            let job = sa.job(&p);
            // Both words of the user value come back.
            let user = u128::from(n) << 64 | u128::from(!n);
            let want = sa.encrypted(&p);
            // The reference's own decryption restores the payload.
            if !sa.gcm {
                assert_eq!(
                    cbc_decrypt_ref(&sa.key, &p.bytes[p.iv()], &want[p.payload()]),
                    &p.bytes[p.payload()]
                );
            }
            let (out, st) = run_one(q, pool, &sa.enc, &p.bytes, &job, user);
            assert_eq!(st, CryptoStatus::Success, "{}", what("encrypt"));
            assert!(out == want, "{}", what("encrypted packet differs"));
            let (back, st) = run_one(q, pool, &sa.dec, &out, &job, user);
            assert_eq!(st, CryptoStatus::Success, "{}", what("decrypt"));
            assert_eq!(
                &back[p.payload()],
                &p.bytes[p.payload()],
                "{}",
                what("round trip")
            );
            let flips = [
                p.esp().start + 5,     // sequence number: authenticated, not encrypted
                p.payload().start + 3, // ciphertext
                p.payload().end - 1,   // last ciphertext byte
                p.icv().start + rng.below(16) as usize, // ICV
            ];
            for at in flips {
                if sa.gcm && at < p.payload().start {
                    // For GCM the header is authenticated through the AAD the job carries.
                    let mut j = job;
                    j.aad[5] ^= 0x10;
                    let (_, st) = run_one(q, pool, &sa.dec, &out, &j, user);
                    assert_eq!(st, CryptoStatus::AuthFailed, "{}", what("AAD bit flipped"));
                    continue;
                }
                let mut bad = out.clone();
                bad[at] ^= 0x10;
                let (_, st) = run_one(q, pool, &sa.dec, &bad, &job, user);
                assert_eq!(
                    st,
                    CryptoStatus::AuthFailed,
                    "{}",
                    what(&format!("bit flipped at byte {at}"))
                );
            }
        }
    }
}

/// Many packets over more SAs than the queue's session table, more than a burst and more than
/// the device's descriptors at once: every packet comes back once with its user value, the ones
/// the device processed match the reference, the refused ones are untouched, and the op and mbuf
/// pools are full at the end.
fn many_in_flight(
    dev: &CryptoDev,
    q: &mut CryptoQueue,
    pool: &Mempool,
    rng: &mut Rng,
    descriptors: u32,
) {
    let name = dev.name().to_owned();
    let sas: Vec<Sa> = (0..12)
        .map(|i| match i % 4 {
            0 => Sa::new_gcm(dev, rng, 16, 8),
            1 => Sa::new_cbc(dev, rng, 32),
            2 => Sa::new_gcm(dev, rng, 32, 12),
            _ => Sa::new_cbc(dev, rng, 16),
        })
        .collect();
    // The queue let go of the earlier tests' sessions at its last poll, except those still in
    // its session table: an idle poll releases them.
    q.poll(|_, _, _| unreachable!());
    assert_eq!(dev.sessions_in_use(), 24);
    let ops = q.ops_capacity();
    assert_eq!(q.ops_available(), ops);

    // Phase 1: push without polling. The device holds at most `descriptors - 1` operations (its
    // ring), so pushes are refused once the burst buffer is full too.
    let n = (descriptors as usize) * 3;
    let mut expect: HashMap<u128, (usize, EspPacket, Vec<u8>)> = HashMap::new();
    let (mut pushed, mut refused) = (0usize, 0usize);
    for user in 0..n as u64 {
        let sa_i = rng.below(sas.len() as u64) as usize;
        let sa = &sas[sa_i];
        let blocks = 1 + rng.below(20) as usize;
        let p = sa.packet(rng, blocks);
        let mut m = pool.alloc().expect("mbuf");
        assert!(m.fill(&p.bytes));
        match q.push(m, &sa.enc, &sa.job(&p), u128::from(user) | 1 << 100) {
            Ok(()) => {
                pushed += 1;
                let want = sa.encrypted(&p);
                expect.insert(u128::from(user) | 1 << 100, (sa_i, p, want));
            }
            Err(m) => {
                refused += 1;
                assert_eq!(m.data(), &p.bytes[..], "refused mbuf comes back untouched");
            }
        }
    }
    assert!(
        refused > 0,
        "{name}: the device refused nothing ({pushed} pushed)"
    );
    assert_eq!(q.in_flight() as usize, pushed);
    assert!(
        pushed >= descriptors as usize - 1,
        "{name}: {pushed} pushed with {descriptors} descriptors"
    );
    let (mut ok, mut full) = (0usize, 0usize);
    let left = {
        let mut check = |m: pmd_glue::Mbuf, st: CryptoStatus, user: u128| {
            let (_, p, want) = expect
                .remove(&user)
                .expect("each user value comes back once");
            match st {
                CryptoStatus::Success => {
                    ok += 1;
                    assert!(m.data() == &want[..], "{name}: packet {user:#x} differs");
                }
                CryptoStatus::QueueFull => {
                    full += 1;
                    assert_eq!(m.data(), &p.bytes[..], "queue-full packet is untouched");
                }
                other => panic!("{name}: packet {user:#x}: {other:?}"),
            }
        };
        // flush: what the device still refuses untouched comes back as QueueFull.
        q.flush(&mut check);
        q.drain(WAIT, &mut check)
    };
    eprintln!(
        "{name}: {n} pushed without polling: {pushed} accepted, {refused} refused; \
         {ok} processed, {full} back as QueueFull"
    );
    assert_eq!(left, 0);
    assert_eq!(ok + full, pushed);
    assert!(
        full > 0,
        "{name}: a full burst buffer comes back as QueueFull on flush"
    );
    assert!(ok >= descriptors as usize - 1);
    assert!(expect.is_empty());
    assert_eq!(q.ops_available(), ops, "{name}: every op is back");
    assert!(pool.is_full(), "{name}: every mbuf is back");

    // Phase 2: a steady loop (push, poll every burst): everything is processed, through the
    // owned-reference path too (12 SAs interleaved > the queue's 8 session pins).
    let mut expect: HashMap<u128, Vec<u8>> = HashMap::new();
    let total = 3000u64;
    let mut out: HashMap<u128, Vec<u8>> = HashMap::new();
    for user in 0..total {
        let sa = &sas[(user % sas.len() as u64) as usize];
        let blocks = 1 + rng.below(8) as usize;
        let p = sa.packet(rng, blocks);
        expect.insert(u128::from(user), sa.encrypted(&p));
        let mut m = pool.alloc().expect("mbuf");
        assert!(m.fill(&p.bytes));
        let job = sa.job(&p);
        let mut m = Some(m);
        // Retry after polling when the device is momentarily full.
        for _ in 0..1000 {
            match q.push(m.take().unwrap(), &sa.enc, &job, u128::from(user)) {
                Ok(()) => break,
                Err(back) => {
                    m = Some(back);
                    q.poll(|m, st, u| {
                        assert_eq!(st, CryptoStatus::Success);
                        out.insert(u, m.data().to_vec());
                    });
                }
            }
        }
        assert!(m.is_none(), "{name}: push never accepted");
        if user % 32 == 31 {
            q.poll(|m, st, u| {
                assert_eq!(st, CryptoStatus::Success);
                out.insert(u, m.data().to_vec());
            });
        }
    }
    let left = q.drain(WAIT, |m, st, u| {
        assert_eq!(st, CryptoStatus::Success);
        out.insert(u, m.data().to_vec());
    });
    assert_eq!(left, 0);
    assert_eq!(
        out.len(),
        total as usize,
        "{name}: every packet came back once"
    );
    for (u, data) in &out {
        assert!(
            expect[u] == *data,
            "{name}: packet {u} differs from the reference"
        );
    }
    assert_eq!(q.ops_available(), ops);
    assert!(pool.is_full());

    // Sessions dropped by their owners while operations are in flight stay alive until the
    // queue is done with them, then are freed.
    let mut keep = Vec::new();
    for (i, sa) in sas.iter().enumerate() {
        let p = sa.packet(rng, 2);
        let mut m = pool.alloc().unwrap();
        assert!(m.fill(&p.bytes));
        q.push(m, &sa.enc, &sa.job(&p), i as u128).unwrap();
        keep.push((i, sa.encrypted(&p)));
    }
    q.flush(|_, st, _| panic!("refused: {st:?}"));
    drop(sas);
    assert!(dev.sessions_in_use() > 0, "in-flight sessions are kept");
    let mut back = HashMap::new();
    assert_eq!(
        q.drain(WAIT, |m, st, u| {
            assert_eq!(st, CryptoStatus::Success);
            back.insert(u, m.data().to_vec());
        }),
        0
    );
    for (i, want) in keep {
        assert!(
            back[&(i as u128)] == want,
            "{name}: packet {i} after its session was dropped"
        );
    }
    q.poll(|_, _, _| unreachable!());
    assert_eq!(dev.sessions_in_use(), 0, "{name}: sessions freed once idle");
}

/// Pushes that cannot be carried out hand the mbuf back untouched, and nothing leaks.
fn refused_pushes(devs: &[CryptoDev], q: &mut CryptoQueue, pool: &Mempool, rng: &mut Rng) {
    let dev = &devs[0];
    let gcm = Sa::new_gcm(dev, rng, 16, 8);
    let cbc = Sa::new_cbc(dev, rng, 16);
    let p = gcm.packet(rng, 4);
    let good = gcm.job(&p);
    let len = p.bytes.len() as u32;
    let fresh = || {
        let mut m = pool.alloc().unwrap();
        assert!(m.fill(&p.bytes));
        m
    };
    let refuse =
        |q: &mut CryptoQueue, m: pmd_glue::Mbuf, s: &Session, job: &CryptoJob, why: &str| {
            let before = m.data().to_vec();
            let back = q.push(m, s, job, 0).expect_err(why);
            assert_eq!(back.data(), &before[..], "{why}: mbuf comes back untouched");
            assert_eq!(q.in_flight(), 0, "{why}");
        };
    let with = |f: &dyn Fn(&mut CryptoJob)| {
        let mut j = good;
        f(&mut j);
        j
    };
    refuse(
        q,
        fresh(),
        &gcm.enc,
        &with(&|j| j.cipher_len = len),
        "cipher range past the data",
    );
    refuse(
        q,
        fresh(),
        &gcm.enc,
        &with(&|j| j.digest_offset = len - 15),
        "ICV past the data",
    );
    refuse(
        q,
        fresh(),
        &gcm.enc,
        &with(&|j| j.cipher_offset = u32::MAX),
        "offset overflow",
    );
    refuse(
        q,
        fresh(),
        &gcm.enc,
        &with(&|j| {
            j.cipher_offset = u32::MAX - 2;
            j.cipher_len = 4;
        }),
        "offset + length overflow",
    );
    let pc = cbc.packet(rng, 4);
    let cj = cbc.job(&pc);
    let fresh_cbc = || {
        let mut m = pool.alloc().unwrap();
        assert!(m.fill(&pc.bytes));
        m
    };
    refuse(
        q,
        fresh_cbc(),
        &cbc.enc,
        &CryptoJob {
            auth_len: pc.bytes.len() as u32,
            ..cj
        },
        "auth range past the data (chain)",
    );
    // AES-CBC over a partial block (crypto_aesni_mb would encrypt a whole block past the range
    // and report success).
    refuse(
        q,
        fresh_cbc(),
        &cbc.enc,
        &CryptoJob {
            cipher_len: cj.cipher_len - 1,
            ..cj
        },
        "AES-CBC length not a multiple of 16",
    );
    // GCM ignores the auth range.
    let mut m = fresh();
    m.data_mut().unwrap();
    let ok_job = CryptoJob {
        auth_offset: u32::MAX,
        auth_len: u32::MAX,
        ..good
    };
    q.push(m, &gcm.enc, &ok_job, 0)
        .expect("GCM ignores the auth range");
    assert_eq!(
        q.drain(WAIT, |_, st, _| assert_eq!(st, CryptoStatus::Success)),
        0
    );

    // A multi-segment packet.
    let mut head = fresh();
    let mut tail = pool.alloc().unwrap();
    assert!(tail.fill(&[1; 64]));
    head.chain(tail).expect("chain");
    assert_eq!(head.nb_segs(), 2);
    refuse(q, head, &gcm.enc, &good, "multi-segment mbuf");
    // A packet whose bytes are shared with a clone (the device would write under the clone).
    let m = fresh();
    let clone = m.clone_indirect(pool).unwrap();
    refuse(q, m, &gcm.enc, &good, "shared mbuf");
    refuse(q, clone, &gcm.enc, &good, "indirect mbuf");
    // A session of another device.
    let other = Sa::new_gcm(&devs[1], rng, 16, 8);
    refuse(q, fresh(), &other.enc, &good, "session of another device");
    assert!(pool.is_full(), "every refused mbuf was freed");
    assert_eq!(q.ops_available(), q.ops_capacity(), "no op leaked");
}

/// Specs the device cannot do are errors that name the device and the spec.
fn unsupported_specs(dev: &CryptoDev) {
    let k16 = [7u8; 16];
    let k20 = [7u8; 20];
    let k32 = [7u8; 32];
    let cases: Vec<(SessionSpec<'_>, &str)> = vec![
        (
            SessionSpec::AesGcm {
                key: &k20,
                dir: CipherDir::Encrypt,
                aad_len: 8,
                digest_len: 16,
            },
            "20-byte key",
        ),
        (
            SessionSpec::AesGcm {
                key: &k16,
                dir: CipherDir::Encrypt,
                aad_len: 8,
                digest_len: 0,
            },
            "0-byte tag",
        ),
        (
            SessionSpec::AesGcm {
                key: &k16,
                dir: CipherDir::Decrypt,
                aad_len: 20,
                digest_len: 16,
            },
            "20-byte AAD",
        ),
        (
            SessionSpec::AesGcm {
                key: &k16,
                dir: CipherDir::Decrypt,
                aad_len: 8,
                digest_len: 17,
            },
            "17-byte tag",
        ),
        (
            SessionSpec::AesCbcHmacSha256 {
                cipher_key: &k20,
                auth_key: &k32,
                dir: CipherDir::Encrypt,
                digest_len: 16,
            },
            "AES-CBC with a 20-byte key",
        ),
        (
            SessionSpec::AesCbcHmacSha256 {
                cipher_key: &k16,
                auth_key: &k32,
                dir: CipherDir::Decrypt,
                digest_len: 33,
            },
            "33-byte digest",
        ),
    ];
    for (spec, needle) in cases {
        let err = dev
            .session(&spec)
            .expect_err(&format!("{}: {spec:?} must be refused", dev.name()));
        let msg = err.to_string();
        assert!(msg.contains(dev.name()), "{msg}");
        assert!(msg.contains(needle), "{msg} (expected {needle:?})");
    }
    // GCM with a 7-byte tag: some devices take truncated tags (RFC 4106 allows 8, 12, 16).
    let seven = dev.session(&SessionSpec::AesGcm {
        key: &k16,
        dir: CipherDir::Encrypt,
        aad_len: 8,
        digest_len: 7,
    });
    eprintln!(
        "{}: AES-GCM with a 7-byte tag: {}",
        dev.name(),
        match &seven {
            Ok(_) => "supported".to_owned(),
            Err(e) => e.to_string(),
        }
    );
    match seven {
        Ok(s) => drop(s),
        Err(e) => assert!(e.to_string().contains("7-byte tag"), "{e}"),
    }
    assert_eq!(dev.sessions_in_use(), 0);
}

/// Sessions and devices are shared between lcores; a queue moves to the lcore that uses it.
#[test]
fn handle_threading() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<CryptoDev>();
    send_sync::<Session>();
    send::<CryptoQueue>();
}

#[test]
fn cryptodev_end_to_end() {
    let eal = Eal::init("pmd-glue-crypto-test", &eal_args()).expect("EAL init with crypto vdevs");
    eprintln!("IOVA mode: {}", pmd_glue::eal::iova_mode());
    let pool = Mempool::pktmbuf("crypto_mbufs", 4095, 0, 2176, SocketId::ANY).expect("pool");
    let mut rng = Rng(0x5eed_1234);
    const DESC: u32 = 128;
    let cfg = CryptoDevConfig {
        queue_pairs: 1,
        descriptors: DESC,
        ops_per_queue: 1024,
        sessions: 64,
        socket: SocketId::ANY,
    };

    let mut devs = Vec::new();
    let mut queues = Vec::new();
    for name in DEVICES {
        let mut dev = CryptoDev::open(name, "", &cfg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dev.name(), name);
        assert!(name.starts_with(dev.driver()), "{} {}", name, dev.driver());
        let mut q = dev.take_queues().expect("queues");
        assert_eq!(q.len(), 1);
        assert!(dev.take_queues().is_err(), "queues are handed out once");
        let q = q.pop().unwrap();
        assert_eq!(q.dev_id(), dev.id());
        assert_eq!(q.ops_capacity(), 1024);
        devs.push(dev);
        queues.push(q);
    }

    for (dev, q) in devs.iter().zip(queues.iter_mut()) {
        eprintln!("{}: GCM known answers", dev.name());
        gcm_known_answers(dev, q, &pool);
        eprintln!("{}: ESP packets vs RustCrypto", dev.name());
        esp_vs_reference(dev, q, &pool, &mut rng);
        eprintln!("{}: many in flight", dev.name());
        many_in_flight(dev, q, &pool, &mut rng, DESC);
        eprintln!("{}: unsupported specs", dev.name());
        unsupported_specs(dev);
        assert!(pool.is_full());
        assert_eq!(q.ops_available(), q.ops_capacity());
    }
    refused_pushes(&devs, &mut queues[0], &pool, &mut rng);
    // The other device refuses the first one's sessions the same way.
    let s0 = Sa::new_gcm(&devs[0], &mut rng, 16, 8);
    let mut m = pool.alloc().unwrap();
    assert!(m.fill(&[0; 64]));
    assert!(queues[1]
        .push(m, &s0.enc, &CryptoJob::default(), 0)
        .is_err());
    drop(s0);

    // Device lifecycle.
    let err = CryptoDev::open(DEVICES[0], "", &cfg).expect_err("open twice");
    assert!(err.to_string().contains("already open"), "{err}");
    let err = CryptoDev::open("net_null0", "", &cfg).expect_err("not a crypto device");
    assert!(err.to_string().contains("net_null0"), "{err}");
    let err = CryptoDev::open("crypto_nosuchdriver0", "", &cfg).expect_err("no such driver");
    assert!(
        err.to_string()
            .contains("rte_vdev_init(crypto_nosuchdriver0"),
        "{err}"
    );
    let err = CryptoDev::open(
        "crypto_aesni_mb3",
        "",
        &CryptoDevConfig {
            queue_pairs: 1000,
            ..cfg.clone()
        },
    )
    .expect_err("too many queue pairs");
    assert!(err.to_string().contains("1000 queue pairs"), "{err}");
    assert!(
        !cryptodev::list()
            .iter()
            .any(|c| c.name == "crypto_aesni_mb3"),
        "a device created for a failed open is removed again"
    );
    // Created through open, removed on the last drop, and creatable again.
    for round in 0..2 {
        let mut d = CryptoDev::open("crypto_aesni_mb7", "max_nb_queue_pairs=2", &cfg)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(d.driver(), "crypto_aesni_mb");
        assert!(cryptodev::list()
            .iter()
            .any(|c| c.name == "crypto_aesni_mb7"));
        let mut q = d.take_queues().unwrap().pop().unwrap();
        let sa = Sa::new_gcm(&d, &mut rng, 16, 12);
        drop(d); // the queue and the session keep the device open
        let p = sa.packet(&mut rng, 3);
        let (out, st) = run_one(&mut q, &pool, &sa.enc, &p.bytes, &sa.job(&p), 9);
        assert_eq!(st, CryptoStatus::Success);
        assert!(out == sa.encrypted(&p));
        drop(sa);
        assert!(cryptodev::list()
            .iter()
            .any(|c| c.name == "crypto_aesni_mb7"));
        drop(q);
        assert!(
            !cryptodev::list()
                .iter()
                .any(|c| c.name == "crypto_aesni_mb7"),
            "round {round}: the created device is removed with its last handle"
        );
    }
    let err = CryptoDev::open("crypto_openssl0", "max_nb_queue_pairs=2", &cfg)
        .expect_err("args for an existing device");
    assert!(err.to_string().contains("already exists"), "{err}");

    // A probed device closes with its last handle and opens again.
    drop(queues);
    drop(devs);
    for name in DEVICES {
        let mut dev = CryptoDev::open(
            name,
            "",
            &CryptoDevConfig {
                queue_pairs: 2,
                ..cfg.clone()
            },
        )
        .unwrap_or_else(|e| panic!("reopen {name}: {e}"));
        let qs = dev.take_queues().unwrap();
        assert_eq!(qs.len(), 2);
        let sa = Sa::new_cbc(&dev, &mut rng, 16);
        for (i, mut q) in qs.into_iter().enumerate() {
            assert_eq!(q.qp() as usize, i);
            let p = sa.packet(&mut rng, 5);
            let (out, st) = run_one(&mut q, &pool, &sa.enc, &p.bytes, &sa.job(&p), 3);
            assert_eq!(st, CryptoStatus::Success);
            assert!(out == sa.encrypted(&p), "{name} qp {i}");
        }
    }
    // Whoever drops a session's last handle frees it. A queue keeps a reference to a session it
    // used until it needs the slot, the session's other handles are gone, or it is told to let
    // go of its idle ones: then the caller's last handle is the last one.
    {
        let mut dev = CryptoDev::open(DEVICES[0], "", &cfg).unwrap();
        assert_eq!(dev.sessions_capacity(), 64);
        let mut q = dev.take_queues().unwrap().pop().unwrap();
        let sa = Sa::new_gcm(&dev, &mut rng, 16, 8);
        let s = sa.enc.clone();
        assert!(s.same_session(&sa.enc) && !s.same_session(&sa.dec));
        assert_eq!(s.handles(), 2);
        let p = sa.packet(&mut rng, 2);
        let (_, st) = run_one(&mut q, &pool, &s, &p.bytes, &sa.job(&p), 1);
        assert_eq!(st, CryptoStatus::Success);
        assert_eq!(s.handles(), 3, "the queue keeps an idle reference");
        q.release_idle_sessions();
        assert_eq!(s.handles(), 2);
        let in_use = dev.sessions_in_use();
        drop(sa);
        assert_eq!(s.handles(), 1);
        assert_eq!(
            dev.sessions_in_use(),
            in_use - 1,
            "dec freed, enc still held"
        );
        drop(s);
        assert_eq!(
            dev.sessions_in_use(),
            in_use - 2,
            "freed by its last handle"
        );
        // In flight, the queue holds the session; released once the operation is back.
        let sa = Sa::new_gcm(&dev, &mut rng, 16, 8);
        let p = sa.packet(&mut rng, 2);
        let mut m = pool.alloc().unwrap();
        assert!(m.fill(&p.bytes));
        q.push(m, &sa.enc, &sa.job(&p), 7).unwrap();
        q.release_idle_sessions();
        assert_eq!(sa.enc.handles(), 2, "not idle: kept");
        assert_eq!(q.drain(WAIT, |_, _, _| {}), 0);
        q.release_idle_sessions();
        assert_eq!(sa.enc.handles(), 1);
    }
    // A queue dropped with packets in flight waits for them and frees them.
    {
        let mut dev = CryptoDev::open(DEVICES[1], "", &cfg).unwrap();
        let mut q = dev.take_queues().unwrap().pop().unwrap();
        let sa = Sa::new_gcm(&dev, &mut rng, 32, 8);
        for u in 0..40 {
            let p = sa.packet(&mut rng, 2);
            let mut m = pool.alloc().unwrap();
            assert!(m.fill(&p.bytes));
            q.push(m, &sa.enc, &sa.job(&p), u).unwrap();
        }
        assert_eq!(q.in_flight(), 40);
        assert!(!pool.is_full());
        drop(q);
        assert!(pool.is_full(), "dropping a queue returns its packets");
    }
    drop(pool);
    eal.cleanup()
        .expect("EAL cleanup with nothing crypto alive");
}
