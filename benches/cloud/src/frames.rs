//! Sealed records frames of a 1 Hz boiler temperature, as a device that
//! reports one block a frame sends them.

use telemark_core::codec::{BlockCodec, CompactCodec};
use telemark_core::model::{ChannelId, Reading, Value};
use telemark_core::time::Instant;
use telemark_core::wire::frame::FrameWriter;
use telemark_core::wire::seal::{FrameKind, Header, Sealing};
use telemark_core::wire::{Epoch, Record, RecordMeta, Seq};

/// A boiler's flow temperature at second `second`, °C with two decimals:
/// a slow swing and a little noise.
pub fn temperature(second: u64) -> Value {
    let t = second as f64;
    let swing = 62.0 + 14.0 * (t * std::f64::consts::TAU / 1200.0).sin();
    // A fixed hash of the second for noise of ±0.04 °C.
    let noise = ((second.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as f64 - 32.0) / 800.0;
    Value::Scaled(((swing + noise) * 100.0).round() as i32)
}

/// The `n` readings of frame `index`: channel 1, second `index * n` on.
pub fn readings(index: u32, n: u32) -> Vec<Reading> {
    let first = u64::from(index) * u64::from(n);
    (first..first + u64::from(n))
        .map(|s| Reading::new(ChannelId(1), Instant::from_millis(s * 1000), temperature(s)))
        .collect()
}

/// Frame `index` of device `device`, sealed with `sealing`: one block of
/// `n` readings ([`readings`]), sent as counter `index + 1` of epoch 1 at
/// the uptime of its last reading.
pub fn frame(device: u64, sealing: &Sealing, index: u32, n: u32) -> Result<Vec<u8>, String> {
    let readings = readings(index, n);
    let mut block = vec![0u8; 16 * 1024];
    let len = CompactCodec
        .encode(&readings, &mut block)
        .map_err(|e| format!("block: {e:?}"))?;
    block.truncate(len);
    let header = Header::new(FrameKind::Records, device, Epoch(1), index + 1, sealing);
    let mut buf = vec![0u8; len + 256];
    let uptime = Instant::from_millis((u64::from(index) + 1) * u64::from(n) * 1000);
    let mut w = FrameWriter::new(&mut buf, &header, uptime, sealing)
        .map_err(|e| format!("frame: {e:?}"))?;
    let record = Record {
        seq: Seq(index),
        meta: RecordMeta::routine(u16::try_from(n).map_err(|e| e.to_string())?),
        payload: &block,
    };
    w.push(&record, None)
        .map_err(|e| format!("record: {e:?}"))?;
    let len = w.finish(sealing).map_err(|e| format!("seal: {e:?}"))?;
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemark_core::wire::seal::Key;

    #[test]
    fn frames_of_one_device_differ_and_carry_their_readings() {
        let sealing = Sealing::key(1, Key::from_bytes([7; 32]));
        let a = frame(5, &sealing, 0, 60).unwrap();
        let b = frame(5, &sealing, 1, 60).unwrap();
        assert_ne!(a, b);
        assert_eq!(readings(1, 60).len(), 60);
        assert_eq!(readings(1, 60)[0].time, Instant::from_millis(60_000));
    }
}
