//! Queue music: what callers waiting in a queue hear.
//!
//! Owns the built-in "please hold" pattern, the encoding of a queue's music into 20 ms
//! G.711 frames (both variants, once, when the music is set), the one generator task per
//! queue that hands the same frame to every listener each 20 ms, the position beeps, and
//! the RTP packets a listener sends. The relay (`relay.rs`) is the listener: each waiting
//! caller's relay task takes the queue's ticks and sends them from its caller-facing
//! port, so the music costs one timer per queue, not one per caller, and a frame is
//! encoded once, not once per caller.
//!
//! The pattern, the encoding, the beeps and the RTP header are pure; the generator is the
//! adapter around a tokio timer.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, watch};

use super::g711::{self, Codec};
use super::greeting::{FRAME_SAMPLES, Greeting, SAMPLE_RATE};

/// One RTP packet of G.711: 20 ms.
pub const FRAME: Duration = Duration::from_millis(20);
/// Ticks a listener may fall behind before it skips ahead (160 ms): a relay task busy
/// that long has a caller who hears a gap either way.
const BACKLOG: usize = 8;
/// Bytes of an RTP header without CSRCs or extensions (RFC 3550 5.1).
pub const RTP_HEADER: usize = 12;
/// The most position beeps played: "nine or more callers before you" sounds the same.
pub const MAX_BEEPS: u32 = 9;

/// One 20 ms frame in both G.711 variants, so that every listener's codec is served from
/// the same tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pcmu: [u8; FRAME_SAMPLES],
    pcma: [u8; FRAME_SAMPLES],
}

impl Frame {
    fn encode(samples: &[i16]) -> Frame {
        let mut frame = Frame {
            pcmu: [Codec::Pcmu.silence_byte(); FRAME_SAMPLES],
            pcma: [Codec::Pcma.silence_byte(); FRAME_SAMPLES],
        };
        let mut out = Vec::with_capacity(FRAME_SAMPLES);
        for (codec, target) in [
            (Codec::Pcmu, &mut frame.pcmu),
            (Codec::Pcma, &mut frame.pcma),
        ] {
            out.clear();
            g711::encode(
                codec,
                &samples[..samples.len().min(FRAME_SAMPLES)],
                &mut out,
            );
            target[..out.len()].copy_from_slice(&out);
        }
        frame
    }

    /// The frame's 160 bytes in `codec`.
    pub fn payload(&self, codec: Codec) -> &[u8] {
        match codec {
            Codec::Pcmu => &self.pcmu,
            Codec::Pcma => &self.pcma,
        }
    }
}

/// A piece of music as the generator loops it; never empty.
pub type Track = Arc<[Frame]>;

/// Cuts 8 kHz samples into frames; the last is padded with silence.
pub fn encode(samples: &[i16]) -> Track {
    let mut frames: Vec<Frame> = samples.chunks(FRAME_SAMPLES).map(Frame::encode).collect();
    if frames.is_empty() {
        frames.push(Frame::encode(&[]));
    }
    frames.into()
}

/// Length of the built-in pattern: one chime every 3.2 s.
const PATTERN_SAMPLES: usize = 3_200 * SAMPLE_RATE as usize / 1_000;

/// The built-in music: a soft two-note chime (E5 then C5, a falling third like a
/// doorbell, each note with a quieter octave for a bell's timbre) that dies away, then
/// silence, every 3.2 s. Calm, and clearly a line that is held rather than dead or
/// ringing. The notes have decayed to nothing well before the end, so the loop has no
/// click.
pub fn builtin_pattern() -> Vec<i16> {
    const NOTES: [(f32, f32); 2] = [(659.25, 0.0), (523.25, 0.45)];
    const PEAK: f32 = 4_500.0;
    const ATTACK_S: f32 = 0.008;
    const DECAY_S: f32 = 0.32;
    const RING_S: f32 = 1.8;
    (0..PATTERN_SAMPLES)
        .map(|n| {
            let t = n as f32 / SAMPLE_RATE as f32;
            let sample: f32 = NOTES
                .iter()
                .filter(|(_, start)| t >= *start && t < start + RING_S)
                .map(|(hz, start)| {
                    let local = t - start;
                    let attack = (local / ATTACK_S).min(1.0);
                    // The last 0.2 s fade to exactly zero instead of being cut.
                    let tail = ((RING_S - local) / 0.2).min(1.0);
                    let envelope = attack * tail * (-local / DECAY_S).exp();
                    let phase = 2.0 * std::f32::consts::PI * hz * local;
                    PEAK * envelope * (phase.sin() + 0.25 * (2.0 * phase).sin())
                })
                .sum();
            sample.round().clamp(-32_768.0, 32_767.0) as i16
        })
        .collect()
}

/// The built-in pattern, encoded once for the whole process.
fn builtin_track() -> Track {
    static TRACK: OnceLock<Track> = OnceLock::new();
    TRACK.get_or_init(|| encode(&builtin_pattern())).clone()
}

fn track_of(source: Option<Greeting>) -> Track {
    source.map_or_else(builtin_track, |music| encode(music.samples()))
}

/// What the generator hands every listener each 20 ms.
#[derive(Debug, Clone)]
pub struct Tick {
    track: Track,
    index: usize,
}

impl Tick {
    /// This tick's 160 bytes of music in `codec`.
    pub fn payload(&self, codec: Codec) -> &[u8] {
        self.track[self.index].payload(codec)
    }
}

/// What a queue's waiting callers hear: one generator task per queue.
#[derive(Clone)]
pub struct Music {
    inner: Arc<Inner>,
}

struct Inner {
    ticks: broadcast::Sender<Tick>,
    source: watch::Sender<Track>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Music {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Music")
            .field("listeners", &self.listeners())
            .finish()
    }
}

impl Music {
    /// Starts the generator for `source` (`None`: the built-in tone pattern). The task
    /// idles (no ticking) while nobody listens and stops when the last clone is dropped.
    /// Call it inside the tokio runtime the generator should run on.
    pub fn start(source: Option<Greeting>) -> Music {
        let (ticks, _) = broadcast::channel(BACKLOG);
        let (source, track) = watch::channel(track_of(source));
        let wake = Arc::new(Notify::new());
        tokio::spawn(generate(ticks.clone(), track, wake.clone()));
        Music {
            inner: Arc::new(Inner {
                ticks,
                source,
                wake,
            }),
        }
    }

    /// Switches what is played (an admin uploaded new music), for every listener at once.
    pub fn replace(&self, source: Option<Greeting>) {
        self.inner.source.send_replace(track_of(source));
    }

    /// A new listener: it gets every tick from the next one on.
    pub fn listen(&self) -> broadcast::Receiver<Tick> {
        let ticks = self.inner.ticks.subscribe();
        // A stored permit if the generator is not waiting yet: the wake-up is never lost.
        self.inner.wake.notify_one();
        ticks
    }

    /// How many listeners the generator serves now.
    pub fn listeners(&self) -> usize {
        self.inner.ticks.receiver_count()
    }
}

/// The generator: one tick each 20 ms while anyone listens; ends when every `Music` clone
/// is gone (the watch channel closes).
async fn generate(
    ticks: broadcast::Sender<Tick>,
    mut source: watch::Receiver<Track>,
    wake: Arc<Notify>,
) {
    let mut track = source.borrow_and_update().clone();
    let mut index = 0;
    let mut clock = tokio::time::interval(FRAME);
    // A generator that was held up catches up, so the music keeps its pace on average;
    // listeners' jitter buffers absorb the short burst better than a gap.
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        let idle = ticks.receiver_count() == 0;
        tokio::select! {
            () = wake.notified(), if idle => {
                clock.reset_immediately();
                continue;
            }
            _ = clock.tick(), if !idle => {}
            changed = source.changed() => {
                if changed.is_err() {
                    return;
                }
                track = source.borrow_and_update().clone();
                index = 0;
                continue;
            }
        }
        // No listener left since the check: the tick is simply not heard.
        let _ = ticks.send(Tick {
            track: track.clone(),
            index,
        });
        index = (index + 1) % track.len();
    }
}

/// The beeps that tell a caller their position: that many short tones (at most nine),
/// then a pause before the music goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    beeps: u32,
    next: usize,
}

/// One beep and the gap after it: 160 ms of 880 Hz and 240 ms of silence.
const BEEP_FRAMES: usize = 8;
const BEEP_UNIT_FRAMES: usize = 20;
/// The pause after the last beep, so the count is not lost in the music.
const PAUSE_FRAMES: usize = 30;

impl Announcement {
    pub fn new(position: u32) -> Announcement {
        Announcement {
            beeps: position.min(MAX_BEEPS),
            next: 0,
        }
    }

    /// The next frame of the announcement in `codec`; `None` once it is over.
    pub fn next_frame(&mut self, codec: Codec) -> Option<&'static [u8]> {
        let beep_frames = self.beeps as usize * BEEP_UNIT_FRAMES;
        let frame = if self.next < beep_frames {
            &beep_unit()[self.next % BEEP_UNIT_FRAMES]
        } else if self.next < beep_frames + PAUSE_FRAMES && self.beeps > 0 {
            silence()
        } else {
            return None;
        };
        self.next += 1;
        Some(frame.payload(codec))
    }
}

fn beep_unit() -> &'static [Frame] {
    static UNIT: OnceLock<Track> = OnceLock::new();
    UNIT.get_or_init(|| {
        const TONE: usize = BEEP_FRAMES * FRAME_SAMPLES;
        const FADE: usize = 40;
        let samples: Vec<i16> = (0..BEEP_UNIT_FRAMES * FRAME_SAMPLES)
            .map(|n| {
                if n >= TONE {
                    return 0;
                }
                let edge = n.min(TONE - 1 - n);
                let gain = (edge as f32 / FADE as f32).min(1.0);
                let phase = 2.0 * std::f32::consts::PI * 880.0 * n as f32 / SAMPLE_RATE as f32;
                (5_000.0 * gain * phase.sin()).round() as i16
            })
            .collect();
        encode(&samples)
    })
}

fn silence() -> &'static Frame {
    static SILENCE: OnceLock<Frame> = OnceLock::new();
    SILENCE.get_or_init(|| Frame::encode(&[0; FRAME_SAMPLES]))
}

/// The RTP stream a listener sends: its own SSRC, sequence numbers and timestamps that
/// run on across music, beeps and pauses in playing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpStream {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    marker: bool,
}

impl RtpStream {
    /// A stream starting at random values (RFC 3550 5.1), the first packet marked.
    pub fn random() -> RtpStream {
        RtpStream::new(rand::random(), rand::random(), rand::random())
    }

    pub fn new(ssrc: u32, sequence: u16, timestamp: u32) -> RtpStream {
        RtpStream {
            ssrc,
            sequence,
            timestamp,
            marker: true,
        }
    }

    /// The next packet sets the marker bit: the audio starts (again) after a pause.
    pub fn talkspurt(&mut self) {
        self.marker = true;
    }

    /// Time passed without a packet: the timestamp moves on, the sequence does not.
    pub fn skip(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
    }

    /// Writes the next packet (a 12-byte header and `payload`, one 20 ms frame) into `out`
    /// and returns its length.
    pub fn packet(&mut self, payload_type: u8, payload: &[u8], out: &mut [u8]) -> usize {
        let length = RTP_HEADER + payload.len();
        out[0] = 0x80; // version 2, no padding, no extension, no CSRC
        out[1] = (payload_type & 0x7f) | if self.marker { 0x80 } else { 0 };
        out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        out[RTP_HEADER..length].copy_from_slice(payload);
        self.marker = false;
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(payload.len() as u32);
        length
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rms(samples: &[i16]) -> f64 {
        let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
        (sum / samples.len().max(1) as f64).sqrt()
    }

    #[test]
    fn the_builtin_pattern_chimes_and_then_falls_silent_so_it_loops_cleanly() {
        let pattern = builtin_pattern();
        assert_eq!(pattern.len(), PATTERN_SAMPLES);
        let first_second = &pattern[..8_000];
        assert!(rms(first_second) > 500.0, "audible: {}", rms(first_second));
        assert!(
            pattern.iter().all(|s| s.unsigned_abs() < 12_000),
            "soft, never clipping"
        );
        // The end (what joins the start of the next loop) is silent: no click.
        assert!(pattern[pattern.len() - 2_000..].iter().all(|&s| s == 0));
        assert!(pattern[0].unsigned_abs() < 100);
        // Two notes: the second starts while the first still rings.
        assert!(rms(&pattern[3_600..4_400]) > 300.0);
    }

    #[test]
    fn music_is_cut_into_frames_of_both_codecs_with_the_last_padded() {
        let track = encode(&vec![1_000i16; 400]);
        assert_eq!(track.len(), 3);
        assert_eq!(
            track[0].payload(Codec::Pcmu),
            &[g711::ulaw_encode(1_000); 160][..]
        );
        assert_eq!(
            track[0].payload(Codec::Pcma),
            &[g711::alaw_encode(1_000); 160][..]
        );
        assert_eq!(
            track[2].payload(Codec::Pcmu)[80..],
            [g711::SILENCE_PCMU; 80]
        );
        assert_eq!(track[2].payload(Codec::Pcma)[79], g711::alaw_encode(1_000));
        assert_eq!(track[2].payload(Codec::Pcma)[80], g711::SILENCE_PCMA);
    }

    #[test]
    fn position_beeps_are_counted_capped_and_followed_by_a_pause() {
        let count = |position: u32| {
            let mut announcement = Announcement::new(position);
            let mut frames = Vec::new();
            while let Some(frame) = announcement.next_frame(Codec::Pcmu) {
                frames.push(frame.to_vec());
            }
            let silent = |f: &Vec<u8>| f.iter().all(|&b| b == g711::SILENCE_PCMU);
            // A beep starts where a sounding frame follows a silent one (or starts).
            let beeps = (0..frames.len())
                .filter(|&i| !silent(&frames[i]) && (i == 0 || silent(&frames[i - 1])))
                .count();
            (beeps, frames.len())
        };
        assert_eq!(count(0), (0, 0), "nothing to announce");
        assert_eq!(count(1), (1, BEEP_UNIT_FRAMES + PAUSE_FRAMES));
        assert_eq!(count(3).0, 3);
        assert_eq!(count(9).0, 9);
        assert_eq!(count(40), count(9), "capped at nine");
    }

    #[test]
    fn rtp_packets_run_on_with_one_ssrc_and_the_first_marked() {
        let mut stream = RtpStream::new(0xfeed_beef, u16::MAX, u32::MAX - 100);
        let mut out = [0u8; RTP_HEADER + 160];
        let mut packets = Vec::new();
        for n in 0..3u8 {
            if n == 2 {
                stream.skip(160);
            }
            let len = stream.packet(8, &[n; 160], &mut out);
            packets.push(out[..len].to_vec());
        }
        let read: Vec<_> = packets
            .iter()
            .map(|p| {
                let rtp = rtp_rs::RtpReader::new(p).unwrap();
                (
                    rtp.mark(),
                    rtp.payload_type(),
                    u16::from(rtp.sequence_number()),
                    rtp.timestamp(),
                    rtp.ssrc(),
                    rtp.payload()[0],
                )
            })
            .collect();
        assert_eq!(
            read,
            vec![
                (true, 8, u16::MAX, u32::MAX - 100, 0xfeed_beef, 0),
                (false, 8, 0, 59, 0xfeed_beef, 1),
                (false, 8, 1, 379, 0xfeed_beef, 2),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_generator_serves_every_listener_the_same_frames_and_loops() {
        let short = Greeting::from_samples(vec![2_000; 3 * FRAME_SAMPLES]).unwrap();
        let music = Music::start(Some(short));
        let mut first = music.listen();
        let mut second = music.listen();
        assert_eq!(music.listeners(), 2);
        let mut indexes = Vec::new();
        for _ in 0..7 {
            let a = first.recv().await.unwrap();
            let b = second.recv().await.unwrap();
            assert!(Arc::ptr_eq(&a.track, &b.track));
            assert_eq!(a.index, b.index);
            indexes.push(a.index);
        }
        assert_eq!(indexes, vec![0, 1, 2, 0, 1, 2, 0], "music that ends loops");
    }

    #[tokio::test(start_paused = true)]
    async fn replace_switches_every_listener_at_the_next_tick() {
        let music = Music::start(None);
        let mut listeners = [music.listen(), music.listen(), music.listen()];
        for listener in &mut listeners {
            listener.recv().await.unwrap();
        }
        let tone = Greeting::from_samples(vec![3_000; 10 * FRAME_SAMPLES]).unwrap();
        music.replace(Some(tone));
        let expected = [g711::ulaw_encode(3_000); 160];
        for listener in &mut listeners {
            // A tick already queued before the switch may still be the old music.
            let mut heard = listener.recv().await.unwrap();
            if heard.payload(Codec::Pcmu) != expected {
                heard = listener.recv().await.unwrap();
            }
            assert_eq!(heard.payload(Codec::Pcmu), expected);
            assert_eq!(heard.index, 0, "the new music starts at its beginning");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_generator_idles_without_listeners_and_ends_with_the_last_clone() {
        let music = Music::start(None);
        let clone = music.clone();
        // Nobody listens for a while: no tick is produced (a late listener starts with
        // the frame after the last one sent, which is the first).
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut late = music.listen();
        assert_eq!(late.recv().await.unwrap().index, 0);
        drop(late);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut again = music.listen();
        let resumed = again.recv().await.unwrap().index;
        assert!(
            resumed < 60,
            "it did not tick while idle: at frame {resumed}"
        );
        drop(music);
        drop(clone);
        let ended = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                if let Err(broadcast::error::RecvError::Closed) = again.recv().await {
                    break;
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the generator stopped with the last clone");
    }
}
