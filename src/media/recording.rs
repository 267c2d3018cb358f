//! Call recording: placing each side's RTP audio on one timeline and streaming it to WAV.
//!
//! Owns the recording timeline (where a packet's samples belong, given its RTP timestamp,
//! its SSRC and when it arrived), the short reorder window that is the only audio kept in
//! memory, and the 8 kHz 16-bit WAV it streams to (`hound`), mono or stereo. It does not
//! read sockets or clocks: the relay task hands it every RTP packet it forwards, with the
//! arrival time it measured, and calls [`Recorder::finish`] when the call ends.
//!
//! Placement, per side (caller, callee):
//! - A side's stream is anchored at its first packet: that packet goes where its arrival
//!   time says. Later packets of the same SSRC go where the RTP timestamp says, relative
//!   to the newest packet so far (RFC 3550 5.1: the timestamp is the sampling instant;
//!   the signed 32-bit difference handles wrap-around). So jitter does not move audio,
//!   and gaps (lost packets, silence suppression) come out as silence of the right length.
//! - A new SSRC, or a timestamp more than [`REANCHOR_JUMP`] (2 s) away from where the
//!   arrival time says the packet belongs, re-anchors the side at the arrival time: the
//!   source changed (transfer, re-INVITE, a media server taking over).
//! - A packet is placed if its place is at most [`REORDER_WINDOW`] (200 ms) before its
//!   own arrival, so packets reordered or delayed by up to 200 ms land where they belong;
//!   later ones are dropped and counted. Frames are written to the file once the newest
//!   arrival is a window past them (never past the end of the audio placed so far). Both
//!   rules use the arrival clock, not the other side's packets, so a silent side does not
//!   hold the other back, and a one-way call still streams to disk.
//! - Sender clocks drift against ours, and some senders stop the timestamp during silence.
//!   Both make a side's packets fall ever later behind their arrival. When the smallest
//!   lag over about a second of packets exceeds [`DRIFT_LIMIT`] (100 ms), the side's later
//!   packets are placed that much later (a short silence is inserted); and
//!   [`LATE_RESYNC_PACKETS`] in-order packets in a row too late to place re-anchor the side
//!   at their arrival, so a stalled timestamp costs two packets, not the talkspurt.
//!   A sender clock running fast moves its side early instead, which costs nothing until
//!   it reaches 2 s (after some 5 h at 100 ppm) and re-anchors.
//!
//! Memory is bounded: the window holds at most [`WINDOW_CAPACITY`] frames (about 3.2 s of
//! stereo, 100 KiB) whatever the call length; the recording stops growing after
//! [`MAX_RECORDING_SAMPLES`] (24 h, which keeps a stereo WAV under its 4 GiB limit).

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::media::g711::{self, Codec};

/// The sample rate of G.711 and of every recording.
pub const SAMPLE_RATE: u32 = 8_000;
/// How far behind the newest arrival a packet may still be placed: 200 ms.
pub const REORDER_WINDOW: u64 = 1_600;
/// A timestamp this far (2 s) from where the arrival time puts a packet means a new source.
pub const REANCHOR_JUMP: u64 = 16_000;
/// Smallest lag (arrival − position) over a drift period above which a side is moved
/// later: 100 ms, half the reorder window, so drift is corrected before packets drop.
pub const DRIFT_LIMIT: u64 = 800;
/// In-order packets in a row too late to place before the side is re-anchored.
pub const LATE_RESYNC_PACKETS: u32 = 3;
/// The longest packet accepted, 1 s; longer payloads are not RTP audio from a phone.
pub const MAX_PACKET_SAMPLES: usize = 8_000;
/// The frames the reorder window can hold: what arrival time allows a packet to be ahead
/// of what is written (window, jump limit, one packet).
pub const WINDOW_CAPACITY: u64 = REORDER_WINDOW + REANCHOR_JUMP + MAX_PACKET_SAMPLES as u64;
/// The recording stops here (24 h): a 24 h stereo WAV is 2.8 GB, under the 4 GiB limit.
pub const MAX_RECORDING_SAMPLES: u64 = 24 * 3_600 * SAMPLE_RATE as u64;

/// Packets per drift period (about 1 s of 20 ms packets).
const DRIFT_PERIOD_PACKETS: u32 = 50;

/// Which leg a packet came from.
pub use super::Side;

/// How the two sides are written.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    /// Mono: the sum of both sides, saturating.
    Mixed,
    /// Stereo: caller on the left, callee on the right.
    Split,
}

impl Channels {
    fn count(self) -> u16 {
        match self {
            Channels::Mixed => 1,
            Channels::Split => 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot create the recording file {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: hound::Error,
    },
    #[error("writing the recording file {path} failed (is the disk full?): {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: hound::Error,
    },
    #[error("{samples} samples are more than one recording can hold ({MAX_RECORDING_SAMPLES})")]
    TooLong { samples: u64 },
}

/// What a finished recording holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordingSummary {
    pub duration_ms: u64,
    /// Frames in the file (per channel).
    pub samples: u64,
    /// Packets that arrived after their place had been written (and in-order packets
    /// dropped before a re-anchor).
    pub late_packets_dropped: u64,
    /// The call outlasted [`MAX_RECORDING_SAMPLES`]; the rest was not recorded.
    pub truncated: bool,
}

/// A call recording being written. Feed it every forwarded RTP packet with
/// [`Recorder::packet`], then call [`Recorder::finish`]. Dropping it without `finish`
/// leaves a valid WAV of what was written, without the last 200 ms.
pub struct Recorder {
    path: PathBuf,
    timeline: Timeline,
    sink: WavSink,
}

impl Recorder {
    /// Creates (or truncates) the WAV file: 8 kHz, 16-bit PCM, one or two channels.
    pub fn create(path: &Path, channels: Channels) -> Result<Recorder, RecordingError> {
        let writer =
            hound::WavWriter::create(path, wav_spec(channels.count())).map_err(|source| {
                RecordingError::Create {
                    path: path.to_owned(),
                    source,
                }
            })?;
        Ok(Recorder {
            path: path.to_owned(),
            timeline: Timeline::new(),
            sink: WavSink {
                writer,
                channels,
                error: None,
            },
        })
    }

    /// One RTP packet the relay forwarded. `arrival_samples` is when it arrived, counted
    /// in 8 kHz samples since the recording started, from a monotonic clock
    /// (`elapsed.as_micros() * 8 / 1000`). Only G.711 (payload types 0 and 8) is audio;
    /// other payload types are ignored. Write errors are kept for [`Recorder::finish`].
    #[allow(clippy::too_many_arguments)] // the RTP header fields the timeline needs
    pub fn packet(
        &mut self,
        side: Side,
        payload_type: u8,
        sequence: u16,
        timestamp: u32,
        ssrc: u32,
        payload: &[u8],
        arrival_samples: u64,
    ) {
        let packet = Packet {
            side,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            payload,
            arrival: arrival_samples,
        };
        self.timeline.packet(&packet, &mut self.sink);
    }

    /// Writes what is still in the reorder window and finalises the WAV header.
    pub fn finish(mut self) -> Result<RecordingSummary, RecordingError> {
        self.timeline.finish(&mut self.sink);
        let WavSink { writer, error, .. } = self.sink;
        let result = match error {
            Some(source) => Err(source),
            None => writer.finalize(),
        };
        result.map_err(|source| RecordingError::Write {
            path: self.path,
            source,
        })?;
        Ok(self.timeline.summary())
    }
}

/// Writes a whole mono recording at once (a voicemail message): 8 kHz, 16-bit PCM.
pub fn write_mono(path: &Path, samples: &[i16]) -> Result<(), RecordingError> {
    let count = samples.len() as u64;
    if count > MAX_RECORDING_SAMPLES {
        return Err(RecordingError::TooLong { samples: count });
    }
    let create_error = |source| RecordingError::Create {
        path: path.to_owned(),
        source,
    };
    let write_error = |source| RecordingError::Write {
        path: path.to_owned(),
        source,
    };
    let mut writer = hound::WavWriter::create(path, wav_spec(1)).map_err(create_error)?;
    // Fits: checked against MAX_RECORDING_SAMPLES above.
    let mut fast = writer.get_i16_writer(count as u32);
    for &sample in samples {
        fast.write_sample(sample);
    }
    fast.flush().map_err(write_error)?;
    writer.finalize().map_err(write_error)
}

fn wav_spec(channels: u16) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

/// Where the timeline's frames go: the WAV writer, or a vector in tests.
trait FrameSink {
    /// One frame: `[caller, callee]`.
    fn frame(&mut self, frame: [i16; 2]);
}

struct WavSink {
    writer: hound::WavWriter<BufWriter<File>>,
    channels: Channels,
    /// The first write error; after it nothing more is written.
    error: Option<hound::Error>,
}

impl FrameSink for WavSink {
    fn frame(&mut self, [caller, callee]: [i16; 2]) {
        if self.error.is_some() {
            return;
        }
        let written = match self.channels {
            Channels::Mixed => self.writer.write_sample(caller.saturating_add(callee)),
            Channels::Split => self
                .writer
                .write_sample(caller)
                .and_then(|()| self.writer.write_sample(callee)),
        };
        if let Err(e) = written {
            self.error = Some(e);
        }
    }
}

/// One RTP packet as the timeline sees it.
struct Packet<'a> {
    side: Side,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
    payload: &'a [u8],
    arrival: u64,
}

/// Where one side's RTP stream lands. Positions are in samples since the recording
/// started; signed, because a timestamp may point before the start.
#[derive(Debug, Clone)]
struct Stream {
    ssrc: u32,
    /// The newest packet so far (by sequence number) and where it went.
    sequence: u16,
    timestamp: u32,
    position: i64,
    /// Smallest arrival − position in the current drift period.
    min_lag: i64,
    period_packets: u32,
    late_in_a_row: u32,
}

impl Stream {
    fn anchored(packet: &Packet<'_>, arrival: i64) -> Stream {
        Stream {
            ssrc: packet.ssrc,
            sequence: packet.sequence,
            timestamp: packet.timestamp,
            position: arrival,
            min_lag: i64::MAX,
            period_packets: 0,
            late_in_a_row: 0,
        }
    }
}

/// The pure part of the recorder: places packets and emits frames in order.
#[derive(Debug)]
struct Timeline {
    streams: [Option<Stream>; 2],
    /// Frames before this position have been emitted.
    flushed: u64,
    /// Frames `[flushed, flushed + window.len())`, as `[caller, callee]`.
    window: VecDeque<[i16; 2]>,
    /// The end of the furthest audio placed: the length of the recording.
    end: u64,
    latest_arrival: u64,
    late_dropped: u64,
    truncated: bool,
    decoded: Vec<i16>,
}

impl Timeline {
    fn new() -> Timeline {
        Timeline {
            streams: [None, None],
            flushed: 0,
            window: VecDeque::new(),
            end: 0,
            latest_arrival: 0,
            late_dropped: 0,
            truncated: false,
            decoded: Vec::with_capacity(MAX_PACKET_SAMPLES),
        }
    }

    fn packet(&mut self, packet: &Packet<'_>, sink: &mut impl FrameSink) {
        let Some(codec) = Codec::from_payload_type(packet.payload_type) else {
            return;
        };
        if packet.payload.is_empty() || packet.payload.len() > MAX_PACKET_SAMPLES {
            return;
        }
        if packet.arrival > MAX_RECORDING_SAMPLES {
            self.truncated = true;
            return;
        }
        self.latest_arrival = self.latest_arrival.max(packet.arrival);
        let length = packet.payload.len() as u64;
        match self.place(packet) {
            None => self.late_dropped += 1,
            Some(position) if position + length > MAX_RECORDING_SAMPLES => self.truncated = true,
            Some(position) => {
                // Make room: only what arrival time has already passed is forced out
                // (see WINDOW_CAPACITY), so nothing still placeable is written early.
                let end = position + length;
                if end > self.flushed + WINDOW_CAPACITY {
                    self.flush_to(end - WINDOW_CAPACITY, sink);
                }
                self.write(packet.side, codec, packet.payload, position);
                self.end = self.end.max(end);
            }
        }
        let ready = self
            .latest_arrival
            .saturating_sub(REORDER_WINDOW)
            .min(self.end);
        self.flush_to(ready, sink);
    }

    /// Where the packet's first sample goes, or `None` when it is too late to place: more
    /// than the reorder window behind its own arrival, or behind what was written.
    fn place(&mut self, packet: &Packet<'_>) -> Option<u64> {
        // Fits: arrival was checked against MAX_RECORDING_SAMPLES.
        let arrival = packet.arrival as i64;
        let flushed = self.flushed;
        let placeable = |position: i64| {
            u64::try_from(position)
                .ok()
                .filter(|&p| p >= flushed && position + REORDER_WINDOW as i64 >= arrival)
        };
        let slot = &mut self.streams[packet.side.index()];
        let Some(stream) = slot.as_mut().filter(|s| s.ssrc == packet.ssrc) else {
            // First packet of the side, or a new source.
            *slot = Some(Stream::anchored(packet, arrival));
            return placeable(arrival);
        };
        // RFC 3550 A.1: sequence numbers and timestamps compare modulo 2^16 and 2^32.
        let newer = (packet.sequence.wrapping_sub(stream.sequence) as i16) > 0;
        let delta = i64::from(packet.timestamp.wrapping_sub(stream.timestamp) as i32);
        let position = stream.position + delta;
        if position.abs_diff(arrival) > REANCHOR_JUMP {
            *stream = Stream::anchored(packet, arrival);
            return placeable(arrival);
        }
        if !newer {
            // A reordered (or duplicated) older packet goes back in its place if that is
            // still in the window.
            return placeable(position);
        }
        stream.sequence = packet.sequence;
        stream.timestamp = packet.timestamp;
        stream.position = position;
        let Some(placed) = placeable(position) else {
            // The newest packet, yet too late: a burst of delay, or the stream's timing
            // slipped (drift, a timestamp stopped during silence). A burst is dropped; a
            // slip is not going to recover, so a few in a row re-anchor the side.
            stream.late_in_a_row += 1;
            if stream.late_in_a_row >= LATE_RESYNC_PACKETS {
                *stream = Stream::anchored(packet, arrival);
                return placeable(arrival);
            }
            return None;
        };
        stream.late_in_a_row = 0;
        stream.min_lag = stream.min_lag.min(arrival - position);
        stream.period_packets += 1;
        if stream.period_packets >= DRIFT_PERIOD_PACKETS {
            // Every packet of the period arrived at least min_lag after its place: the
            // sender's clock is behind ours. Move the side later before it falls out of
            // the reorder window.
            if stream.min_lag > DRIFT_LIMIT as i64 {
                stream.position += stream.min_lag;
            }
            stream.min_lag = i64::MAX;
            stream.period_packets = 0;
        }
        Some(placed)
    }

    fn write(&mut self, side: Side, codec: Codec, payload: &[u8], position: u64) {
        self.decoded.clear();
        g711::decode(codec, payload, &mut self.decoded);
        // position >= flushed (place) and the window was made long enough (packet).
        let offset = (position - self.flushed) as usize;
        let needed = offset + self.decoded.len();
        if self.window.len() < needed {
            self.window.resize(needed, [0, 0]);
        }
        let channel = side.index();
        for (frame, &sample) in self.window.range_mut(offset..).zip(&self.decoded) {
            frame[channel] = sample;
        }
    }

    /// Emits frames up to `target`; past the placed audio they are silence.
    fn flush_to(&mut self, target: u64, sink: &mut impl FrameSink) {
        while self.flushed < target {
            sink.frame(self.window.pop_front().unwrap_or([0, 0]));
            self.flushed += 1;
        }
    }

    fn finish(&mut self, sink: &mut impl FrameSink) {
        self.flush_to(self.end, sink);
    }

    fn summary(&self) -> RecordingSummary {
        RecordingSummary {
            duration_ms: self.flushed * 1_000 / u64::from(SAMPLE_RATE),
            samples: self.flushed,
            late_packets_dropped: self.late_dropped,
            truncated: self.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PCMU: u8 = 0;
    const PCMA: u8 = 8;
    const PACKET: u64 = 160;

    impl FrameSink for Vec<[i16; 2]> {
        fn frame(&mut self, frame: [i16; 2]) {
            self.push(frame);
        }
    }

    /// 20 ms packets of a tone, µ-law encoded.
    fn tone(hz: f64, packets: usize, amplitude: f64) -> Vec<Vec<u8>> {
        let samples: Vec<i16> = (0..packets * 160)
            .map(|i| {
                (amplitude * (2.0 * std::f64::consts::PI * hz * i as f64 / 8_000.0).sin()) as i16
            })
            .collect();
        samples
            .chunks(160)
            .map(|chunk| {
                let mut out = Vec::new();
                g711::encode(Codec::Pcmu, chunk, &mut out);
                out
            })
            .collect()
    }

    fn decoded(packets: &[Vec<u8>]) -> Vec<i16> {
        let mut out = Vec::new();
        for p in packets {
            g711::decode(Codec::Pcmu, p, &mut out);
        }
        out
    }

    fn read_wav(path: &Path) -> (hound::WavSpec, Vec<i16>) {
        let mut reader = hound::WavReader::open(path).expect("the recording is a WAV");
        let spec = reader.spec();
        let samples = reader
            .samples::<i16>()
            .collect::<Result<Vec<_>, _>>()
            .expect("16-bit samples");
        (spec, samples)
    }

    struct Feed {
        recorder: Recorder,
    }

    impl Feed {
        /// Packet `i` of a stream: sequence and timestamp follow from `i`.
        #[allow(clippy::too_many_arguments)]
        fn send(
            &mut self,
            side: Side,
            ssrc: u32,
            seq0: u16,
            ts0: u32,
            i: u64,
            payload: &[u8],
            arrival: u64,
        ) {
            self.recorder.packet(
                side,
                PCMU,
                seq0.wrapping_add(i as u16),
                ts0.wrapping_add((i * PACKET) as u32),
                ssrc,
                payload,
                arrival,
            );
        }
    }

    fn recorder(dir: &tempfile::TempDir, channels: Channels) -> (Feed, PathBuf) {
        let path = dir.path().join("call.wav");
        let recorder = Recorder::create(&path, channels).expect("creates the file");
        (Feed { recorder }, path)
    }

    fn rms(samples: impl Iterator<Item = i16>) -> f64 {
        let (sum, n) = samples.fold((0.0, 0usize), |(s, n), x| (s + f64::from(x).powi(2), n + 1));
        (sum / n.max(1) as f64).sqrt()
    }

    #[test]
    fn split_puts_the_caller_left_and_the_callee_right_at_their_times() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut feed, path) = recorder(&dir, Channels::Split);
        let caller = tone(440.0, 50, 8_000.0);
        let callee = tone(660.0, 50, 8_000.0);
        for (i, p) in caller.iter().enumerate() {
            let i = i as u64;
            feed.send(Side::Caller, 0xCA11, 100, 123_456, i, p, i * PACKET + 3);
        }
        for (i, p) in callee.iter().enumerate() {
            let i = i as u64;
            feed.send(
                Side::Callee,
                0xCA1E,
                9,
                4_000_000_000,
                i,
                p,
                8_000 + i * PACKET + 5,
            );
        }
        let summary = feed.recorder.finish().expect("finishes");
        let (spec, samples) = read_wav(&path);
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (2, 8_000, 16)
        );
        let frames = samples.len() as u64 / 2;
        assert_eq!(frames, summary.samples);
        assert!(frames.abs_diff(16_000) <= PACKET, "{frames} frames");
        assert!(summary.duration_ms.abs_diff(2_000) <= 20);
        let left = |range: std::ops::Range<usize>| {
            rms(samples[range.start * 2..range.end * 2]
                .iter()
                .step_by(2)
                .copied())
        };
        let right = |range: std::ops::Range<usize>| {
            rms(samples[range.start * 2 + 1..range.end * 2]
                .iter()
                .step_by(2)
                .copied())
        };
        assert!(left(100..7_900) > 4_000.0);
        assert_eq!(left(8_100..15_900), 0.0);
        assert_eq!(right(100..7_900), 0.0);
        assert!(right(8_100..15_900) > 4_000.0);
        // Samples land exactly: the caller's audio starts at its first arrival.
        let expected = decoded(&caller);
        assert_eq!(samples[6], expected[0]);
        assert_eq!(samples[(3 + 1_000) * 2], expected[1_000]);
    }

    #[test]
    fn mixed_is_the_saturating_sum_of_both_sides() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut feed, path) = recorder(&dir, Channels::Mixed);
        let caller = tone(440.0, 20, 30_000.0);
        let callee = tone(440.0, 20, 30_000.0);
        let quiet = tone(300.0, 20, 1_000.0);
        for i in 0..20u64 {
            let k = i as usize;
            feed.send(Side::Caller, 1, 0, 0, i, &caller[k], i * PACKET);
            feed.send(Side::Callee, 2, 0, 0, i, &callee[k], i * PACKET);
        }
        for i in 0..20u64 {
            feed.send(
                Side::Callee,
                2,
                20,
                20 * 160,
                i,
                &quiet[i as usize],
                (20 + i) * PACKET,
            );
        }
        let summary = feed.recorder.finish().expect("finishes");
        let (spec, samples) = read_wav(&path);
        assert_eq!(spec.channels, 1);
        assert_eq!(summary.samples, 6_400);
        let loud = decoded(&caller);
        let soft = decoded(&quiet);
        for (i, &s) in samples.iter().enumerate() {
            let expected = if i < 3_200 {
                loud[i].saturating_add(loud[i])
            } else {
                soft[i - 3_200]
            };
            assert_eq!(s, expected, "sample {i}");
        }
        assert!(samples.contains(&i16::MAX) && samples.contains(&i16::MIN));
    }

    #[test]
    fn a_lost_packet_is_20_ms_of_silence_in_its_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut feed, path) = recorder(&dir, Channels::Mixed);
        let packets = tone(500.0, 30, 10_000.0);
        for (i, p) in packets.iter().enumerate() {
            if i != 10 {
                let i = i as u64;
                feed.send(Side::Caller, 7, 0, 99, i, p, i * PACKET);
            }
        }
        let summary = feed.recorder.finish().expect("finishes");
        let (_, samples) = read_wav(&path);
        assert_eq!(samples.len(), 4_800);
        assert_eq!(summary.late_packets_dropped, 0);
        let mut expected = decoded(&packets);
        expected[1_600..1_760].fill(0);
        assert_eq!(samples, expected);
    }

    #[test]
    fn reordered_packets_are_placed_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut feed, path) = recorder(&dir, Channels::Mixed);
        let packets = tone(700.0, 30, 10_000.0);
        // 5 arrives after 8, 12 after 13, 20 after 26 (120 ms late).
        let order = [
            0, 1, 2, 3, 4, 6, 7, 8, 5, 9, 10, 11, 13, 12, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24,
            25, 26, 20, 27, 28, 29,
        ];
        for (slot, &i) in order.iter().enumerate() {
            let arrival = (slot as u64).max(i) * PACKET + 40;
            feed.send(Side::Caller, 7, 65_530, 0, i, &packets[i as usize], arrival);
        }
        let summary = feed.recorder.finish().expect("finishes");
        assert_eq!(summary.late_packets_dropped, 0);
        let (_, samples) = read_wav(&path);
        let mut expected = vec![0; 40];
        expected.extend(decoded(&packets));
        assert_eq!(samples, expected);
    }

    #[test]
    fn a_packet_later_than_the_window_is_dropped_and_counted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut feed, path) = recorder(&dir, Channels::Mixed);
        let packets = tone(700.0, 30, 10_000.0);
        for (i, p) in packets.iter().enumerate() {
            if i != 3 {
                let i = i as u64;
                feed.send(Side::Caller, 7, 0, 0, i, p, i * PACKET);
            }
        }
        // Packet 3, 300 ms late: its place was written when packet ~13 arrived.
        feed.send(Side::Caller, 7, 0, 0, 3, &packets[3], 29 * PACKET + 10);
        let summary = feed.recorder.finish().expect("finishes");
        assert_eq!(summary.late_packets_dropped, 1);
        let (_, samples) = read_wav(&path);
        assert!(samples[480..640].iter().all(|&s| s == 0));
    }

    #[test]
    fn a_new_ssrc_re_anchors_at_arrival_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut feed, path) = recorder(&dir, Channels::Mixed);
        let first = tone(400.0, 25, 10_000.0);
        let second = tone(800.0, 25, 10_000.0);
        for (i, p) in first.iter().enumerate() {
            let i = i as u64;
            feed.send(Side::Caller, 0xAAAA, 10, 1_000, i, p, i * PACKET);
        }
        // After a transfer: another source, unrelated sequence and timestamp, 100 ms later.
        let start = 25 * PACKET + 800;
        for (i, p) in second.iter().enumerate() {
            let i = i as u64;
            feed.send(
                Side::Caller,
                0xBBBB,
                50_000,
                3_000_000_000,
                i,
                p,
                start + i * PACKET,
            );
        }
        let summary = feed.recorder.finish().expect("finishes");
        assert_eq!(summary.samples, start + 25 * PACKET);
        let (_, samples) = read_wav(&path);
        assert_eq!(&samples[..4_000], decoded(&first).as_slice());
        assert!(samples[4_000..4_800].iter().all(|&s| s == 0));
        assert_eq!(&samples[4_800..], decoded(&second).as_slice());
    }

    #[test]
    fn a_timestamp_jump_of_more_than_2_s_re_anchors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut feed, path) = recorder(&dir, Channels::Mixed);
        let packets = tone(400.0, 20, 10_000.0);
        for (i, p) in packets.iter().enumerate().take(10) {
            let i = i as u64;
            feed.send(Side::Caller, 5, 0, 0, i, p, i * PACKET);
        }
        // Same SSRC, timestamp 30 s ahead (a re-INVITE to a source that kept the SSRC).
        for (i, p) in packets.iter().enumerate().skip(10) {
            let i = i as u64;
            feed.send(Side::Caller, 5, 0, 240_000, i, p, i * PACKET);
        }
        let summary = feed.recorder.finish().expect("finishes");
        assert_eq!(summary.samples, 3_200);
        let (_, samples) = read_wav(&path);
        assert_eq!(samples, decoded(&packets));
    }

    #[test]
    fn timestamps_wrap_around() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut feed, path) = recorder(&dir, Channels::Mixed);
        let packets = tone(400.0, 40, 10_000.0);
        for (i, p) in packets.iter().enumerate() {
            let i = i as u64;
            // Starts 10 packets before the 32-bit wrap; sequence numbers wrap too.
            feed.send(Side::Callee, 5, 65_530, u32::MAX - 1_599, i, p, i * PACKET);
        }
        let summary = feed.recorder.finish().expect("finishes");
        assert_eq!(summary.samples, 6_400);
        let (_, samples) = read_wav(&path);
        assert_eq!(samples, decoded(&packets));
    }

    #[test]
    fn non_audio_payload_types_are_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut feed, path) = recorder(&dir, Channels::Split);
        let packets = tone(400.0, 10, 10_000.0);
        for (i, p) in packets.iter().enumerate() {
            let i = i as u64;
            feed.send(Side::Caller, 5, 0, 0, i, p, i * PACKET);
            // RFC 4733 telephone-event, comfort noise, G.722, a dynamic type.
            for pt in [101, 13, 9, 96] {
                feed.recorder.packet(
                    Side::Callee,
                    pt,
                    i as u16,
                    (i * PACKET) as u32,
                    6,
                    &[0x80; 160],
                    i * PACKET,
                );
            }
        }
        feed.recorder
            .packet(Side::Caller, 101, 11, 99_999_999, 5, &[1, 2, 3, 4], 100_000);
        let summary = feed.recorder.finish().expect("finishes");
        assert_eq!(summary.samples, 1_600);
        let (_, samples) = read_wav(&path);
        assert!(samples.iter().skip(1).step_by(2).all(|&s| s == 0));

        let (feed, path) = recorder(&dir, Channels::Mixed);
        let mut feed = feed;
        feed.recorder
            .packet(Side::Caller, 101, 1, 0, 5, &[1, 2, 3, 4], 0);
        assert_eq!(feed.recorder.finish().expect("finishes").samples, 0);
        assert!(read_wav(&path).1.is_empty());
    }

    #[test]
    fn pcma_is_decoded_as_a_law() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut feed, path) = recorder(&dir, Channels::Mixed);
        feed.recorder
            .packet(Side::Caller, PCMA, 0, 0, 1, &[0xD5; 160], 0);
        feed.recorder.finish().expect("finishes");
        assert_eq!(read_wav(&path).1, vec![8; 160]);
    }

    #[test]
    fn a_one_way_call_streams_with_a_bounded_window() {
        let mut timeline = Timeline::new();
        let mut out: Vec<[i16; 2]> = Vec::new();
        let payload = [0x80u8; 160];
        // Ten minutes of caller audio, nothing from the callee.
        for i in 0..30_000u64 {
            let packet = Packet {
                side: Side::Caller,
                payload_type: PCMU,
                sequence: i as u16,
                timestamp: (i * PACKET) as u32,
                ssrc: 1,
                payload: &payload,
                arrival: i * PACKET,
            };
            timeline.packet(&packet, &mut out);
            assert!(timeline.window.len() as u64 <= REORDER_WINDOW + PACKET);
            assert!(out.len() as u64 + REORDER_WINDOW + PACKET >= (i + 1) * PACKET);
        }
        timeline.finish(&mut out);
        assert_eq!(out.len(), 30_000 * 160);
    }

    fn caller_packet(sequence: u16, timestamp: u32, arrival: u64, payload: &[u8]) -> Packet<'_> {
        Packet {
            side: Side::Caller,
            payload_type: PCMU,
            sequence,
            timestamp,
            ssrc: 1,
            payload,
            arrival,
        }
    }

    #[test]
    fn sender_clock_drift_is_absorbed_without_drops() {
        // The sender's clock runs 0.5 % slow: each 20 ms packet arrives 20.1 ms after the
        // previous one, 40 samples more lag per second.
        let mut timeline = Timeline::new();
        let mut out: Vec<[i16; 2]> = Vec::new();
        let payload = [0x80u8; 160];
        for i in 0..6_000u64 {
            let arrival = i * 1_608 / 10;
            timeline.packet(
                &caller_packet(i as u16, (i * PACKET) as u32, arrival, &payload),
                &mut out,
            );
            let stream = timeline.streams[0].as_ref().expect("anchored");
            assert!(arrival as i64 - stream.position <= (DRIFT_LIMIT + REORDER_WINDOW) as i64);
        }
        timeline.finish(&mut out);
        assert_eq!(timeline.late_dropped, 0);
        // The inserted silences add up to the drift (2 minutes × 0.5 % = 4800 samples).
        let length = out.len() as u64;
        assert!(
            (6_000 * PACKET + 3_500..=6_000 * PACKET + 4_800).contains(&length),
            "{length}"
        );
    }

    #[test]
    fn a_timestamp_that_stopped_during_silence_costs_two_packets() {
        let mut timeline = Timeline::new();
        let mut out: Vec<[i16; 2]> = Vec::new();
        let payload = [0x80u8; 160];
        for i in 0..50u64 {
            timeline.packet(
                &caller_packet(i as u16, (i * PACKET) as u32, i * PACKET, &payload),
                &mut out,
            );
        }
        // One second of silence suppression, but the sender's timestamp did not advance
        // (RFC 3550 says it should): the next talkspurt looks 1 s late.
        for i in 50..100u64 {
            let arrival = (i + 50) * PACKET;
            timeline.packet(
                &caller_packet(i as u16, (i * PACKET) as u32, arrival, &payload),
                &mut out,
            );
        }
        timeline.finish(&mut out);
        assert_eq!(timeline.late_dropped, 2);
        // The talkspurt from its third packet on sits where it arrived.
        assert_eq!(out.len() as u64, 150 * PACKET);
        assert_eq!(out[(102 * PACKET) as usize][0], 32_124);
        assert_eq!(out[(101 * PACKET) as usize][0], 0);
    }

    #[test]
    fn a_recording_stops_at_24_hours() {
        let mut timeline = Timeline::new();
        let mut out = CountingSink(0);
        let payload = [0x80u8; 160];
        timeline.packet(&caller_packet(0, 0, 0, &payload), &mut out);
        timeline.packet(
            &caller_packet(1, 0, MAX_RECORDING_SAMPLES + 1, &payload),
            &mut out,
        );
        timeline.finish(&mut out);
        let summary = timeline.summary();
        assert!(summary.truncated);
        assert_eq!(summary.samples, 160);
    }

    struct CountingSink(u64);

    impl FrameSink for CountingSink {
        fn frame(&mut self, _: [i16; 2]) {
            self.0 += 1;
        }
    }

    #[test]
    fn write_mono_writes_a_voicemail_message() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("message.wav");
        let samples: Vec<i16> = (0..8_000).map(|i| (i % 200 - 100) as i16).collect();
        write_mono(&path, &samples).expect("writes");
        let (spec, back) = read_wav(&path);
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (1, 8_000, 16)
        );
        assert_eq!(back, samples);
        let missing = dir.path().join("no/such/dir/x.wav");
        assert!(matches!(
            write_mono(&missing, &samples),
            Err(RecordingError::Create { .. })
        ));
        assert!(matches!(
            Recorder::create(&missing, Channels::Split),
            Err(RecordingError::Create { .. })
        ));
    }

    #[test]
    fn channels_are_lowercase_in_json() {
        assert_eq!(
            serde_json::to_value(Channels::Mixed).expect("serialises"),
            "mixed"
        );
        assert_eq!(
            serde_json::from_value::<Channels>(serde_json::json!("split")).expect("valid"),
            Channels::Split
        );
    }

    /// Payload bytes that never decode to 0 in µ-law or A-law, so every placed sample is
    /// visible in the file.
    fn audible_payload() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            any::<u8>().prop_filter("not zero", |b| *b != 0xFF && *b != 0x7F),
            1..400,
        )
    }

    #[derive(Debug, Clone)]
    struct RawPacket {
        callee: bool,
        payload_type: u8,
        sequence: u16,
        timestamp: u32,
        ssrc: u32,
        payload: Vec<u8>,
        arrival: u64,
    }

    fn raw_packet() -> impl Strategy<Value = RawPacket> {
        (
            any::<bool>(),
            proptest::sample::select(vec![PCMU, PCMA, PCMU, PCMA, 13, 101, 9]),
            any::<u16>(),
            prop_oneof![any::<u32>(), 0u32..40_000],
            0u32..3,
            audible_payload(),
            prop_oneof![0u64..40_000, 0u64..200_000],
        )
            .prop_map(
                |(callee, payload_type, sequence, timestamp, ssrc, payload, arrival)| RawPacket {
                    callee,
                    payload_type,
                    sequence,
                    timestamp,
                    ssrc,
                    payload,
                    arrival,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn arbitrary_packets_never_panic_and_the_file_ends_at_the_last_audio(
            packets in proptest::collection::vec(raw_packet(), 0..60),
        ) {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("p.wav");
            let mut recorder = Recorder::create(&path, Channels::Split).expect("creates");
            for p in &packets {
                let side = if p.callee { Side::Callee } else { Side::Caller };
                recorder.packet(side, p.payload_type, p.sequence, p.timestamp, p.ssrc, &p.payload, p.arrival);
            }
            let summary = recorder.finish().expect("finishes");
            let (spec, samples) = read_wav(&path);
            prop_assert_eq!(spec.channels, 2);
            prop_assert_eq!(samples.len() as u64, summary.samples * 2);
            prop_assert_eq!(summary.duration_ms, summary.samples / 8);
            let audio = packets.iter().filter(|p| p.payload_type == PCMU || p.payload_type == PCMA);
            let bound = audio.map(|p| p.arrival + REANCHOR_JUMP + p.payload.len() as u64).max().unwrap_or(0);
            prop_assert!(summary.samples <= bound);
            // The file ends where the furthest placed packet ends: its last frame is audio.
            if let Some(last) = samples.chunks(2).last() {
                prop_assert!(last[0] != 0 || last[1] != 0, "trailing silence");
            }
        }

        #[test]
        fn jitter_within_the_window_does_not_change_the_recording(
            payloads in proptest::collection::vec(audible_payload().prop_map(|mut p| { p.resize(160, 0x10); p }), 2..120),
            jitter in proptest::collection::vec(0u64..1_500, 120),
            ts0 in any::<u32>(),
            seq0 in any::<u16>(),
            lost in proptest::collection::vec(any::<bool>(), 120),
        ) {
            let mut arrivals: Vec<(u64, usize)> = (0..payloads.len())
                .filter(|&i| i == 0 || !lost[i] || i % 3 != 0)
                .map(|i| {
                    // Packet 0 arrives first and anchors; every tenth is on time, so drift
                    // correction stays out of it.
                    let j = if i % 10 == 0 { 0 } else { jitter[i] };
                    (i as u64 * PACKET + j, i)
                })
                .collect();
            let run = |order: &[(u64, usize)], jittered: bool| {
                let mut timeline = Timeline::new();
                let mut out: Vec<[i16; 2]> = Vec::new();
                for &(arrival, i) in order {
                    let arrival = if jittered { arrival } else { i as u64 * PACKET };
                    let packet = Packet {
                        side: Side::Callee,
                        payload_type: PCMA,
                        sequence: seq0.wrapping_add(i as u16),
                        timestamp: ts0.wrapping_add(i as u32 * 160),
                        ssrc: 9,
                        payload: &payloads[i],
                        arrival,
                    };
                    timeline.packet(&packet, &mut out);
                }
                timeline.finish(&mut out);
                (out, timeline.late_dropped)
            };
            let in_order = run(&arrivals, false);
            arrivals.sort();
            let jittered = run(&arrivals, true);
            prop_assert_eq!(jittered.1, 0);
            prop_assert_eq!(jittered, in_order);
        }
    }
}
