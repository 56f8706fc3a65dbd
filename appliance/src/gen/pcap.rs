//! Writing generated frames to a classic pcap file.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

use super::{FrameGenerator, GenError, GenOptions, GenReport, PCAP_EPOCH_SECS};

/// Microseconds after the epoch at which frame `k` is stamped.
pub(super) fn timestamp_micros(k: u64, rate_pps: Option<f64>) -> u64 {
    match rate_pps {
        // Saturating float-to-int conversion; the caller bounds the result.
        Some(rate) => (k as f64 * 1e6 / rate).floor() as u64,
        None => k,
    }
}

pub(super) fn write_pcap(
    opts: &GenOptions,
    count: u64,
    rate_pps: Option<f64>,
    path: &Path,
) -> Result<GenReport, GenError> {
    if let Some(rate) = rate_pps {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(GenError::option(
                "--rate-pps",
                format!("{rate} is not a positive packet rate"),
            ));
        }
    }
    if count > 0 {
        let last = PCAP_EPOCH_SECS + timestamp_micros(count - 1, rate_pps) / 1_000_000;
        if last > u64::from(u32::MAX) {
            return Err(GenError::option(
                "--rate-pps",
                format!(
                    "{count} frames at {} pps run past the pcap timestamp range (year 2106)",
                    rate_pps.unwrap_or(1e6)
                ),
            ));
        }
    }
    let mut generator = FrameGenerator::new(opts)?;

    let io_err = |source| GenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let pcap_err = |source| match source {
        PcapError::IoError(source) => GenError::Io {
            path: path.to_path_buf(),
            source,
        },
        source => GenError::Pcap {
            path: path.to_path_buf(),
            source,
        },
    };

    let file = File::create(path).map_err(io_err)?;
    let header = PcapHeader {
        version_major: 2,
        version_minor: 4,
        ts_correction: 0,
        ts_accuracy: 0,
        snaplen: 65535,
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
    };
    let mut writer = PcapWriter::with_header(BufWriter::with_capacity(1 << 16, file), header)
        .map_err(pcap_err)?;

    let mut report = GenReport::new(generator.flow_count());
    let mut buf = Vec::with_capacity(usize::from(super::MAX_FRAME_SIZE));
    let epoch = Duration::from_secs(PCAP_EPOCH_SECS);
    for k in 0..count {
        let kind = generator.next_frame(&mut buf);
        let ts = epoch + Duration::from_micros(timestamp_micros(k, rate_pps));
        // Frames are at most 9000 bytes.
        let len = buf.len() as u32;
        writer
            .write_packet(&PcapPacket::new(ts, len, &buf))
            .map_err(pcap_err)?;
        report.record(kind, buf.len());
    }
    writer
        .into_writer()
        .into_inner()
        .map_err(|e| io_err(e.into_error()))?;
    Ok(report)
}
