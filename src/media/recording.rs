//! The recording's timeline and its WAV file (8 kHz, 16-bit PCM via `hound`).
//!
//! Each direction's packets are placed on one timeline: a stream is anchored at its first
//! packet's arrival, later packets of the same SSRC by their RTP timestamp, so jitter
//! does not smear the audio; a new SSRC (a transfer, a re-INVITE) or a timestamp that
//! strays more than [`REANCHOR_SAMPLES`] from the arrival time re-anchors by arrival.
//! Samples are kept in memory only for [`REORDER_WINDOW`] behind the newest arrival, so a
//! late packet still lands in its place and a long call costs no more memory than a
//! short one. Gaps (loss, silence suppression) are written as silence.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

pub use super::Side;
use super::g711::{self, Codec};

/// Mixed: one channel, both directions summed. Split: two channels, caller left.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    Mixed,
    Split,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot write the recording: {0}")]
    Wav(#[from] hound::Error),
}

/// What a finished recording holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordingSummary {
    pub duration_ms: u64,
    /// Samples per channel.
    pub samples: u64,
    /// Packets that came after their place had been written.
    pub late_packets_dropped: u64,
}

pub const SAMPLE_RATE: u32 = 8000;
/// How far behind the newest arrival a late packet may still be placed (200 ms).
pub const REORDER_WINDOW: u64 = 1600;
/// A timestamp this far (2 s) from where arrival puts the packet starts a new anchor.
pub const REANCHOR_SAMPLES: i64 = 16_000;

#[derive(Debug, Clone, Copy)]
struct Anchor {
    ssrc: u32,
    timestamp: u32,
    position: u64,
}

pub struct Recorder {
    writer: hound::WavWriter<BufWriter<File>>,
    channels: Channels,
    /// Samples (per channel) already written to the file.
    flushed: u64,
    /// Each side's samples from `flushed` on.
    pending: [VecDeque<i16>; 2],
    anchors: [Option<Anchor>; 2],
    /// One past the last position any packet reached.
    end: u64,
    late: u64,
    scratch: Vec<i16>,
}

impl Recorder {
    pub fn create(path: &Path, channels: Channels) -> Result<Recorder, RecordingError> {
        let spec = hound::WavSpec {
            channels: match channels {
                Channels::Mixed => 1,
                Channels::Split => 2,
            },
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        Ok(Recorder {
            writer: hound::WavWriter::create(path, spec)?,
            channels,
            flushed: 0,
            pending: [VecDeque::new(), VecDeque::new()],
            anchors: [None, None],
            end: 0,
            late: 0,
            scratch: Vec::with_capacity(320),
        })
    }

    /// Places one RTP packet `side` sent; `arrival_samples` is its arrival since the
    /// recording started, in 8 kHz samples. Only G.711 audio is recorded: DTMF events,
    /// comfort noise and other payloads are skipped.
    #[allow(clippy::too_many_arguments)]
    pub fn packet(
        &mut self,
        side: Side,
        payload_type: u8,
        _sequence: u16,
        timestamp: u32,
        ssrc: u32,
        payload: &[u8],
        arrival_samples: u64,
    ) -> Result<(), RecordingError> {
        let Some(codec) = Codec::from_payload_type(payload_type) else {
            return Ok(());
        };
        let index = side.index();
        let position = match self.anchors[index] {
            Some(anchor) if anchor.ssrc == ssrc => {
                let delta = i64::from(timestamp.wrapping_sub(anchor.timestamp) as i32);
                let placed = anchor.position as i64 + delta;
                if (placed - arrival_samples as i64).abs() > REANCHOR_SAMPLES || placed < 0 {
                    None
                } else {
                    Some(placed as u64)
                }
            }
            _ => None,
        };
        let position = position.unwrap_or_else(|| {
            self.anchors[index] = Some(Anchor {
                ssrc,
                timestamp,
                position: arrival_samples,
            });
            arrival_samples
        });
        self.scratch.clear();
        g711::decode(codec, payload, &mut self.scratch);
        let len = self.scratch.len() as u64;
        if position + len <= self.flushed {
            self.late += 1;
            return Ok(());
        }
        let pending = &mut self.pending[index];
        let skip = self.flushed.saturating_sub(position) as usize;
        let offset = position.saturating_sub(self.flushed) as usize;
        let needed = offset + self.scratch.len() - skip;
        if pending.len() < needed {
            pending.resize(needed, 0);
        }
        for (i, sample) in self.scratch[skip..].iter().enumerate() {
            pending[offset + i] = *sample;
        }
        self.end = self.end.max(position + len);
        let horizon = arrival_samples.saturating_sub(REORDER_WINDOW);
        self.flush_to(horizon)
    }

    /// Writes every position before `to` (silence where nobody spoke).
    fn flush_to(&mut self, to: u64) -> Result<(), RecordingError> {
        while self.flushed < to {
            let caller = self.pending[0].pop_front().unwrap_or(0);
            let callee = self.pending[1].pop_front().unwrap_or(0);
            match self.channels {
                Channels::Mixed => self.writer.write_sample(caller.saturating_add(callee))?,
                Channels::Split => {
                    self.writer.write_sample(caller)?;
                    self.writer.write_sample(callee)?;
                }
            }
            self.flushed += 1;
        }
        Ok(())
    }

    /// Writes what is left and completes the file.
    pub fn finish(mut self) -> Result<RecordingSummary, RecordingError> {
        self.flush_to(self.end)?;
        let samples = self.flushed;
        self.writer.finalize()?;
        Ok(RecordingSummary {
            duration_ms: samples * 1000 / u64::from(SAMPLE_RATE),
            samples,
            late_packets_dropped: self.late,
        })
    }
}

/// Writes a mono 8 kHz recording in one go (a voicemail message).
pub fn write_mono(path: &Path, samples: &[i16]) -> Result<(), RecordingError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec)?;
    for sample in samples {
        writer.write_sample(*sample)?;
    }
    writer.finalize()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 20 ms of a loud µ-law tone (alternating full-scale code words).
    fn tone() -> Vec<u8> {
        (0..160)
            .map(|i| if i % 2 == 0 { 0x80 } else { 0x00 })
            .collect()
    }

    fn silence() -> Vec<u8> {
        vec![g711::SILENCE_PCMU; 160]
    }

    fn read(path: &Path) -> (hound::WavSpec, Vec<i16>) {
        let mut reader = hound::WavReader::open(path).unwrap();
        let spec = reader.spec();
        let samples = reader.samples::<i16>().map(Result::unwrap).collect();
        (spec, samples)
    }

    #[test]
    fn split_puts_each_side_on_its_channel_at_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wav");
        let mut rec = Recorder::create(&path, Channels::Split).unwrap();
        // One second of caller, then one second of callee.
        for i in 0..50u32 {
            rec.packet(
                Side::Caller,
                0,
                i as u16,
                i * 160,
                1,
                &tone(),
                u64::from(i) * 160,
            )
            .unwrap();
        }
        for i in 0..50u32 {
            let at = 8000 + u64::from(i) * 160;
            rec.packet(Side::Callee, 0, i as u16, 1000 + i * 160, 2, &tone(), at)
                .unwrap();
        }
        let summary = rec.finish().unwrap();
        assert_eq!(summary.samples, 16_000);
        assert_eq!(summary.duration_ms, 2000);
        let (spec, samples) = read(&path);
        assert_eq!(spec.channels, 2);
        let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
        let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
        assert!(left[..8000].iter().all(|s| s.unsigned_abs() > 1000));
        assert!(left[8000..].iter().all(|s| *s == 0));
        assert!(right[..8000].iter().all(|s| *s == 0));
        assert!(right[8000..].iter().all(|s| s.unsigned_abs() > 1000));
    }

    #[test]
    fn mixed_sums_both_directions_into_one_channel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wav");
        let mut rec = Recorder::create(&path, Channels::Mixed).unwrap();
        rec.packet(Side::Caller, 0, 0, 0, 1, &tone(), 0).unwrap();
        rec.packet(Side::Callee, 0, 0, 0, 2, &tone(), 0).unwrap();
        rec.finish().unwrap();
        let (spec, samples) = read(&path);
        assert_eq!(spec.channels, 1);
        let mut one = Vec::new();
        g711::decode(Codec::Pcmu, &tone(), &mut one);
        assert_eq!(samples[0], one[0].saturating_add(one[0]));
    }

    #[test]
    fn a_lost_packet_is_silence_in_its_place_and_reordering_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.wav");
        let mut rec = Recorder::create(&path, Channels::Mixed).unwrap();
        // Packets 0, 2, 1 (late), 4; 3 lost.
        for (seq, arrival) in [(0u32, 0u64), (2, 320), (1, 360), (4, 640)] {
            rec.packet(
                Side::Caller,
                0,
                seq as u16,
                seq * 160,
                1,
                &tone(),
                arrival,
            )
            .unwrap();
        }
        let summary = rec.finish().unwrap();
        assert_eq!(summary.samples, 800);
        let (_, samples) = read(&path);
        assert!(
            samples[160..320].iter().all(|s| *s != 0),
            "reordered packet placed"
        );
        assert!(
            samples[480..640].iter().all(|s| *s == 0),
            "lost packet is silence"
        );
        assert!(samples[640..800].iter().all(|s| *s != 0));
    }

    #[test]
    fn a_new_ssrc_and_a_wrapped_timestamp_are_placed_by_arrival_and_by_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.wav");
        let mut rec = Recorder::create(&path, Channels::Mixed).unwrap();
        let start = u32::MAX - 159;
        rec.packet(Side::Caller, 8, 0, start, 7, &silence(), 0)
            .unwrap();
        // The timestamp wraps: still the next 20 ms.
        rec.packet(
            Side::Caller,
            8,
            1,
            start.wrapping_add(160),
            7,
            &silence(),
            160,
        )
        .unwrap();
        // After a transfer another source with an unrelated timestamp: by arrival.
        rec.packet(Side::Caller, 0, 50, 123_456, 9, &tone(), 4000)
            .unwrap();
        let summary = rec.finish().unwrap();
        assert_eq!(summary.samples, 4160);
        let (_, samples) = read(&path);
        assert!(samples[4000..4160].iter().all(|s| *s != 0));
    }

    #[test]
    fn dtmf_and_comfort_noise_are_not_audio() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.wav");
        let mut rec = Recorder::create(&path, Channels::Mixed).unwrap();
        rec.packet(Side::Caller, 101, 0, 0, 1, &[1, 0x80, 0, 160], 0)
            .unwrap();
        rec.packet(Side::Caller, 13, 1, 0, 1, &[40], 0).unwrap();
        assert_eq!(rec.finish().unwrap().samples, 0);
    }

    proptest! {
        /// Any packets, in any order, never panic, and the file is as long as the
        /// furthest packet reached.
        #[test]
        fn any_packets_give_a_file_as_long_as_the_furthest_packet(
            packets in proptest::collection::vec(
                (any::<bool>(), prop_oneof![Just(0u8), Just(8u8), Just(101u8)], any::<u32>(),
                 prop_oneof![Just(1u32), Just(2u32)], 0usize..400, 0u64..40_000),
                0..60,
            ),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("p.wav");
            let mut rec = Recorder::create(&path, Channels::Split).unwrap();
            for (caller, pt, ts, ssrc, len, arrival) in packets {
                let side = if caller { Side::Caller } else { Side::Callee };
                rec.packet(side, pt, 0, ts, ssrc, &vec![0x55; len], arrival).unwrap();
            }
            let end = rec.end;
            let summary = rec.finish().unwrap();
            prop_assert_eq!(summary.samples, end);
            let (_, samples) = read(&path);
            prop_assert_eq!(samples.len() as u64, end * 2);
        }
    }
}
