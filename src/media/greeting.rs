//! Voicemail greetings: the WAV an admin uploads, turned into what the call plays.
//!
//! Owns reading an uploaded WAV (PCM 8/16/24/32-bit integer or 32-bit float through
//! `hound`; G.711 µ-law/A-law, which `hound` does not read, through a minimal RIFF walk
//! here), converting it to the one format everything else uses (8 kHz mono 16-bit), the
//! limits (not empty, at most 120 s), cutting it into 20 ms G.711 frames for RTP, the beep
//! played before a message is recorded, and the WAV that is stored. Pure: bytes in, bytes
//! out; no file, socket or clock. Every error is worded for the admin who uploaded the file
//! (the HTTP layer shows it in a 422), and no input makes it panic.
//!
//! Resampling (any rate from 8 to 48 kHz down to 8 kHz): a Hann-windowed sinc low-pass
//! (−6 dB at 3.7 kHz, at least 44 dB down from about 4.2 kHz) is evaluated at the two
//! source samples around each output instant, and the output is interpolated linearly
//! between them. The filter removes what would fold back below 4 kHz; what little folds
//! back from 4.0–4.2 kHz lands above the 3.4 kHz telephone band. Interpolating linearly
//! between samples of a signal already band-limited well below the source Nyquist adds
//! little error. It is simpler than a polyphase resampler and fast enough for a two-minute
//! upload, which is converted once.

use std::io::Cursor;

use crate::media::g711::{self, Codec};

/// The rate of everything a greeting becomes: G.711's.
pub const SAMPLE_RATE: u32 = 8_000;
/// The longest greeting accepted.
pub const MAX_DURATION_S: u32 = 120;
/// Samples in one 20 ms RTP frame at 8 kHz (RFC 3551 4.5: G.711's default packetisation).
pub const FRAME_SAMPLES: usize = 160;

const MIN_SOURCE_RATE: u32 = 8_000;
const MAX_SOURCE_RATE: u32 = 48_000;
const WAVE_FORMAT_PCM: u16 = 0x0001;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 0x0003;
const WAVE_FORMAT_ALAW: u16 = 0x0006;
const WAVE_FORMAT_MULAW: u16 = 0x0007;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// Why an uploaded greeting was refused, in words the admin can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GreetingError {
    #[error(
        "the file is not a WAV file (it does not start with a RIFF/WAVE header); \
         export the greeting as WAV"
    )]
    NotWav,
    #[error("the WAV file contains no audio; record or export the greeting again")]
    Empty,
    #[error(
        "the greeting is {seconds} s long; greetings can be at most {MAX_DURATION_S} s, \
         please shorten it"
    )]
    TooLong { seconds: u64 },
    #[error(
        "the WAV format is not supported ({0}); save it as 16-bit PCM, mono or stereo, \
         8 to 48 kHz"
    )]
    Unsupported(String),
    #[error("the WAV file is damaged ({0}); export the greeting again")]
    Malformed(String),
}

/// A greeting ready to play: 8 kHz mono 16-bit samples, at most 120 s, never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    samples: Vec<i16>,
}

impl Greeting {
    /// Reads an uploaded WAV and converts it to 8 kHz mono. Accepts PCM 8/16/24/32-bit
    /// integer and 32-bit float, G.711 µ-law and A-law, mono or stereo (averaged to mono),
    /// at 8 to 48 kHz.
    pub fn from_wav(bytes: &[u8]) -> Result<Greeting, GreetingError> {
        let riff = Riff::walk(bytes)?;
        let (mono, rate) = match riff.format_tag() {
            WAVE_FORMAT_MULAW => decode_g711(&riff, Codec::Pcmu)?,
            WAVE_FORMAT_ALAW => decode_g711(&riff, Codec::Pcma)?,
            WAVE_FORMAT_PCM | WAVE_FORMAT_IEEE_FLOAT => decode_with_hound(bytes, &riff)?,
            other => return Err(GreetingError::Unsupported(describe_format(other))),
        };
        let samples: Vec<i16> = resample_to_8k(&mono, rate)
            .into_iter()
            .map(to_i16)
            .collect();
        if samples.is_empty() {
            return Err(GreetingError::Empty);
        }
        Ok(Greeting { samples })
    }

    /// The 400 ms, 1 kHz tone played before a voicemail message is recorded, at about
    /// −11 dBm0 (a clear but not startling level on a phone), with 5 ms fades so it does
    /// not click.
    pub fn beep() -> Greeting {
        const LENGTH: usize = 3_200; // 400 ms
        const FADE: usize = 40; // 5 ms
        const AMPLITUDE: f32 = 6_000.0;
        let samples = (0..LENGTH)
            .map(|n| {
                let edge = n.min(LENGTH - 1 - n);
                let gain = if edge < FADE {
                    0.5 - 0.5 * (std::f32::consts::PI * edge as f32 / FADE as f32).cos()
                } else {
                    1.0
                };
                // 1 kHz at 8 kHz is exactly 8 samples per cycle.
                let phase = 2.0 * std::f32::consts::PI * (n % 8) as f32 / 8.0;
                (AMPLITUDE * gain * phase.sin()).round() as i16
            })
            .collect();
        Greeting { samples }
    }

    /// Sound made in code (the queue's built-in music): 8 kHz mono samples. `None` when
    /// empty or longer than the greeting limit, which a caller never plays.
    pub fn from_samples(samples: Vec<i16>) -> Option<Greeting> {
        let limit = MAX_DURATION_S as usize * SAMPLE_RATE as usize;
        (!samples.is_empty() && samples.len() <= limit).then_some(Greeting { samples })
    }

    /// The 8 kHz mono samples.
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }

    pub fn duration_ms(&self) -> u64 {
        self.samples.len() as u64 * 1_000 / u64::from(SAMPLE_RATE)
    }

    /// The greeting as 20 ms G.711 frames (160 bytes each) for RTP; the last frame is
    /// padded with the codec's silence so every packet has the same length.
    pub fn frames(&self, codec: Codec) -> Vec<Vec<u8>> {
        self.samples
            .chunks(FRAME_SAMPLES)
            .map(|chunk| {
                let mut frame = Vec::with_capacity(FRAME_SAMPLES);
                g711::encode(codec, chunk, &mut frame);
                frame.resize(FRAME_SAMPLES, codec.silence_byte());
                frame
            })
            .collect()
    }

    /// The WAV that is stored: 8 kHz mono 16-bit PCM.
    pub fn to_wav_bytes(&self) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut out = Cursor::new(Vec::with_capacity(44 + 2 * self.samples.len()));
        // Writing at most 120 s of 16-bit samples into a Vec cannot fail: no I/O, and far
        // from the 4 GiB WAV limit.
        let write = |out: &mut Cursor<Vec<u8>>| -> hound::Result<()> {
            let mut writer = hound::WavWriter::new(out, spec)?;
            let mut samples = writer.get_i16_writer(self.samples.len() as u32);
            for &s in &self.samples {
                samples.write_sample(s);
            }
            samples.flush()?;
            writer.finalize()
        };
        write(&mut out).expect("an in-memory WAV of at most 120 s always writes");
        out.into_inner()
    }
}

/// The chunks of a RIFF/WAVE file this module needs, found without trusting any size.
struct Riff<'a> {
    fmt: &'a [u8],
    data: &'a [u8],
}

impl<'a> Riff<'a> {
    fn walk(bytes: &'a [u8]) -> Result<Riff<'a>, GreetingError> {
        if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
            return Err(GreetingError::NotWav);
        }
        let mut fmt = None;
        let mut pos = 12usize;
        while let Some(header) = bytes.get(pos..pos + 8) {
            let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let body_start = pos + 8;
            // A size past the end (a truncated upload, or a streaming writer that never
            // went back to fill it in) is cut to what is there.
            let body_end = body_start.saturating_add(size as usize).min(bytes.len());
            let body = &bytes[body_start..body_end];
            match &header[0..4] {
                b"fmt " if fmt.is_none() => fmt = Some(body),
                b"data" => {
                    let Some(fmt) = fmt else {
                        return Err(GreetingError::Malformed(
                            "the data chunk comes before the fmt chunk".into(),
                        ));
                    };
                    if fmt.len() < 16 {
                        return Err(GreetingError::Malformed(
                            "the fmt chunk is too short".into(),
                        ));
                    }
                    return Ok(Riff { fmt, data: body });
                }
                _ => {}
            }
            // RIFF chunks are padded to an even length.
            let padded = (size as usize).saturating_add(size as usize & 1);
            pos = body_start.saturating_add(padded);
        }
        Err(GreetingError::Malformed(if fmt.is_none() {
            "there is no fmt chunk".into()
        } else {
            "there is no data chunk".into()
        }))
    }

    fn u16_at(&self, offset: usize) -> u16 {
        self.fmt
            .get(offset..offset + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32_at(&self, offset: usize) -> u32 {
        self.fmt
            .get(offset..offset + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The format tag; for WAVE_FORMAT_EXTENSIBLE, the tag inside its SubFormat GUID
    /// (the GUID's first two bytes, by the KSDATAFORMAT convention).
    fn format_tag(&self) -> u16 {
        let tag = self.u16_at(0);
        if tag == WAVE_FORMAT_EXTENSIBLE && self.fmt.len() >= 40 {
            self.u16_at(24)
        } else {
            tag
        }
    }

    fn channels(&self) -> u16 {
        self.u16_at(2)
    }

    fn sample_rate(&self) -> u32 {
        self.u32_at(4)
    }

    fn block_align(&self) -> u16 {
        self.u16_at(12)
    }

    fn bits_per_sample(&self) -> u16 {
        self.u16_at(14)
    }
}

/// A name the admin may recognise from their audio editor's export dialog.
fn describe_format(tag: u16) -> String {
    match tag {
        0x0002 => "Microsoft ADPCM".into(),
        0x0011 => "IMA ADPCM".into(),
        0x0031 => "GSM 6.10".into(),
        0x0050 | 0x0055 => "MPEG audio inside WAV".into(),
        other => format!("format tag {other:#06x}"),
    }
}

fn check_layout(channels: u16, rate: u32, frames: u64) -> Result<(), GreetingError> {
    if !(1..=2).contains(&channels) {
        return Err(GreetingError::Unsupported(format!(
            "{channels} channels; use mono or stereo"
        )));
    }
    if !(MIN_SOURCE_RATE..=MAX_SOURCE_RATE).contains(&rate) {
        return Err(GreetingError::Unsupported(format!(
            "a sample rate of {rate} Hz; use 8 to 48 kHz"
        )));
    }
    if frames == 0 {
        return Err(GreetingError::Empty);
    }
    // Compare in samples so a file just over the limit is caught exactly.
    if frames > u64::from(MAX_DURATION_S) * u64::from(rate) {
        return Err(GreetingError::TooLong {
            seconds: frames.div_ceil(u64::from(rate)),
        });
    }
    Ok(())
}

/// Mono samples in [-1, 1] and their rate, from a G.711 WAV (format tags 6 and 7).
fn decode_g711(riff: &Riff<'_>, codec: Codec) -> Result<(Vec<f32>, u32), GreetingError> {
    if riff.bits_per_sample() != 8 {
        return Err(GreetingError::Unsupported(format!(
            "G.711 with {} bits per sample; G.711 has 8",
            riff.bits_per_sample()
        )));
    }
    let channels = riff.channels();
    let rate = riff.sample_rate();
    let frames = riff.data.len() as u64 / u64::from(channels.max(1));
    check_layout(channels, rate, frames)?;
    let mut linear = Vec::with_capacity(riff.data.len());
    g711::decode(codec, riff.data, &mut linear);
    let mono = downmix(
        linear.iter().map(|&s| f32::from(s) / 32_768.0),
        usize::from(channels),
    );
    Ok((mono, rate))
}

/// Mono samples in [-1, 1] and their rate, from a PCM or float WAV read by `hound`.
fn decode_with_hound(bytes: &[u8], riff: &Riff<'_>) -> Result<(Vec<f32>, u32), GreetingError> {
    let reader = hound::WavReader::new(Cursor::new(bytes)).map_err(hound_error)?;
    let spec = reader.spec();
    // The length the header claims, unless the file holds less (a truncated upload or a
    // streaming writer's placeholder size): the limit applies to what will be played.
    let present = riff.data.len() as u64 / u64::from(riff.block_align().max(1));
    let frames = u64::from(reader.duration()).min(present);
    check_layout(spec.channels, spec.sample_rate, frames)?;
    let channels = usize::from(spec.channels);
    let samples: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => {
            read_until_end(reader.into_samples::<f32>())?
                .into_iter()
                // NaN and infinities in a float file are noise, not audio.
                .map(|s| {
                    if s.is_finite() {
                        s.clamp(-1.0, 1.0)
                    } else {
                        0.0
                    }
                })
                .collect()
        }
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = (1u64 << (bits - 1)) as f32;
            read_until_end(reader.into_samples::<i32>())?
                .into_iter()
                .map(|s| s as f32 / scale)
                .collect()
        }
        (format, bits) => {
            return Err(GreetingError::Unsupported(format!(
                "{bits}-bit {}",
                if format == hound::SampleFormat::Float {
                    "float"
                } else {
                    "integer"
                }
            )));
        }
    };
    Ok((downmix(samples.into_iter(), channels), spec.sample_rate))
}

/// Collects samples; a file cut short (the data chunk says more than there is) keeps
/// what it has, as players do. The header was read already, so an I/O error on an
/// in-memory reader can only mean the bytes ran out (hound reports that as `Other`).
fn read_until_end<S, I>(samples: I) -> Result<Vec<S>, GreetingError>
where
    I: Iterator<Item = hound::Result<S>>,
{
    let mut out = Vec::new();
    for sample in samples {
        match sample {
            Ok(s) => out.push(s),
            Err(hound::Error::IoError(_)) => break,
            Err(e) => return Err(hound_error(e)),
        }
    }
    Ok(out)
}

fn hound_error(error: hound::Error) -> GreetingError {
    match error {
        hound::Error::Unsupported => GreetingError::Unsupported(
            "a compressed or unusual encoding (such as ADPCM or MP3 in WAV)".into(),
        ),
        hound::Error::TooWide | hound::Error::InvalidSampleFormat => {
            GreetingError::Unsupported("an unusual sample size".into())
        }
        hound::Error::FormatError(reason) => GreetingError::Malformed(reason.to_lowercase()),
        hound::Error::IoError(_) | hound::Error::UnfinishedSample => {
            GreetingError::Malformed("the file ends in the middle of its header".into())
        }
    }
}

/// Averages interleaved channels into one (averaging, not summing, so it cannot clip).
fn downmix(samples: impl Iterator<Item = f32>, channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return samples.collect();
    }
    let samples: Vec<f32> = samples.collect();
    samples
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect()
}

/// Cut-off of the anti-aliasing filter (−6 dB point) and the width of its transition band.
const CUTOFF_HZ: f64 = 3_700.0;
const TRANSITION_HZ: f64 = 1_000.0;

/// Resamples mono audio to 8 kHz (see the module doc for the method).
fn resample_to_8k(input: &[f32], rate: u32) -> Vec<f32> {
    if rate == SAMPLE_RATE {
        return input.to_vec();
    }
    let taps = low_pass(rate);
    let half = taps.len() / 2;
    // One filtered source sample: the taps centred on `center`, zero outside the input.
    let filtered = |center: usize| -> f32 {
        let first = center.saturating_sub(half);
        let last = (center + half).min(input.len().saturating_sub(1));
        (first..=last)
            .map(|i| input[i] * taps[i + half - center])
            .sum()
    };
    let out_len = (input.len() as u64 * u64::from(SAMPLE_RATE) / u64::from(rate)) as usize;
    let step = f64::from(rate) / f64::from(SAMPLE_RATE);
    (0..out_len)
        .map(|n| {
            let position = n as f64 * step;
            let index = position as usize;
            let fraction = (position - index as f64) as f32;
            let a = filtered(index);
            if fraction == 0.0 || index + 1 >= input.len() {
                a
            } else {
                a + (filtered(index + 1) - a) * fraction
            }
        })
        .collect()
}

/// Hann-windowed sinc low-pass at the source rate, normalised to unity gain at 0 Hz.
/// The length gives the Hann window's transition width (about 3.1 × rate / length).
fn low_pass(rate: u32) -> Vec<f32> {
    let rate = f64::from(rate);
    let length = ((3.1 * rate / TRANSITION_HZ).ceil() as usize) | 1;
    let middle = (length / 2) as f64;
    let cutoff = CUTOFF_HZ / rate; // cycles per sample
    let mut taps: Vec<f64> = (0..length)
        .map(|k| {
            let t = k as f64 - middle;
            let sinc = if t == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * std::f64::consts::PI * cutoff * t).sin() / (std::f64::consts::PI * t)
            };
            let window =
                0.5 - 0.5 * (2.0 * std::f64::consts::PI * k as f64 / (length - 1) as f64).cos();
            sinc * window
        })
        .collect();
    let sum: f64 = taps.iter().sum();
    for tap in &mut taps {
        *tap /= sum;
    }
    taps.into_iter().map(|t| t as f32).collect()
}

fn to_i16(sample: f32) -> i16 {
    // The inverse of dividing by 32768, so 16-bit input comes back exactly; `as`
    // saturates (+1.0 becomes 32767) and turns NaN into 0.
    (sample * 32_768.0).round() as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wav<S: hound::Sample + Copy>(spec: hound::WavSpec, samples: &[S]) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut out, spec).expect("spec is valid");
        for &s in samples {
            writer.write_sample(s).expect("writes to a Vec");
        }
        writer.finalize().expect("writes to a Vec");
        out.into_inner()
    }

    fn spec(channels: u16, rate: u32, bits: u16, float: bool) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        }
    }

    fn sine(rate: u32, hz: f64, seconds: f64, amplitude: f64) -> Vec<f64> {
        let n = (f64::from(rate) * seconds).round() as usize;
        (0..n)
            .map(|i| {
                amplitude * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin()
            })
            .collect()
    }

    fn rms(samples: &[i16]) -> f64 {
        let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
        (sum / samples.len().max(1) as f64).sqrt()
    }

    /// A WAV with a hand-written header, for the formats hound does not write.
    fn raw_wav(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let block_align = channels * bits / 8;
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&tag.to_le_bytes());
        fmt.extend_from_slice(&channels.to_le_bytes());
        fmt.extend_from_slice(&rate.to_le_bytes());
        fmt.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
        fmt.extend_from_slice(&block_align.to_le_bytes());
        fmt.extend_from_slice(&bits.to_le_bytes());
        fmt.extend_from_slice(&0u16.to_le_bytes()); // cbSize
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        let size = 4 + 8 + fmt.len() + 8 + 4 + 8 + data.len() + (data.len() & 1);
        out.extend_from_slice(&(size as u32).to_le_bytes());
        out.extend_from_slice(b"WAVE");
        out.extend_from_slice(b"fmt ");
        out.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
        out.extend_from_slice(&fmt);
        // A fact chunk, as G.711 files carry, to walk past.
        out.extend_from_slice(b"fact");
        out.extend_from_slice(&4u32.to_le_bytes());
        out.extend_from_slice(&((data.len() / usize::from(channels)) as u32).to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(0);
        }
        out
    }

    #[test]
    fn a_16_khz_stereo_upload_becomes_8_khz_mono() {
        let left = sine(16_000, 440.0, 1.5, 16_000.0);
        let interleaved: Vec<i16> = left.iter().flat_map(|&l| [l.round() as i16, 0]).collect();
        let g = Greeting::from_wav(&wav(spec(2, 16_000, 16, false), &interleaved)).expect("valid");
        assert_eq!(g.samples().len(), 12_000);
        assert_eq!(g.duration_ms(), 1_500);
        // The left channel averaged with a silent right one: half the amplitude (RMS of a
        // sine of 8000 peak is ~5657), 440 Hz well inside the pass band.
        let middle = &g.samples()[1_000..11_000];
        assert!((rms(middle) - 5_657.0).abs() < 150.0, "rms {}", rms(middle));
    }

    #[test]
    fn what_would_alias_is_filtered_out() {
        // 6 kHz at 48 kHz would fold to 2 kHz at 8 kHz without the low-pass.
        let tone: Vec<i16> = sine(48_000, 6_000.0, 0.5, 20_000.0)
            .iter()
            .map(|s| s.round() as i16)
            .collect();
        let g = Greeting::from_wav(&wav(spec(1, 48_000, 16, false), &tone)).expect("valid");
        assert_eq!(g.samples().len(), 4_000);
        let kept = rms(&g.samples()[200..3_800]);
        // 20000 peak is ~14142 RMS; at least 44 dB down is below ~90.
        assert!(kept < 90.0, "aliased energy left: rms {kept}");
    }

    #[test]
    fn every_pcm_depth_and_float_is_read() {
        let tone = sine(44_100, 300.0, 0.2, 0.5);
        let cases: Vec<Vec<u8>> = vec![
            wav(
                spec(1, 44_100, 8, false),
                &tone.iter().map(|s| (s * 127.0) as i8).collect::<Vec<_>>(),
            ),
            wav(
                spec(1, 44_100, 16, false),
                &tone
                    .iter()
                    .map(|s| (s * 32_767.0) as i16)
                    .collect::<Vec<_>>(),
            ),
            wav(
                spec(1, 44_100, 24, false),
                &tone
                    .iter()
                    .map(|s| (s * 8_388_607.0) as i32)
                    .collect::<Vec<_>>(),
            ),
            wav(
                spec(1, 44_100, 32, false),
                &tone
                    .iter()
                    .map(|s| (s * 2_147_483_647.0) as i32)
                    .collect::<Vec<_>>(),
            ),
            wav(
                spec(1, 44_100, 32, true),
                &tone.iter().map(|&s| s as f32).collect::<Vec<_>>(),
            ),
        ];
        for bytes in cases {
            let g = Greeting::from_wav(&bytes).expect("valid");
            assert_eq!(g.samples().len(), 1_600);
            // Half scale sine: RMS ~ 11585; 8-bit is coarser.
            let level = rms(&g.samples()[100..1_500]);
            assert!((level - 11_585.0).abs() < 300.0, "rms {level}");
        }
    }

    #[test]
    fn an_8_khz_mono_16_bit_upload_is_kept_as_is() {
        let samples: Vec<i16> = (0..800).map(|i| (i * 37 % 2_000 - 1_000) as i16).collect();
        let g = Greeting::from_wav(&wav(spec(1, 8_000, 16, false), &samples)).expect("valid");
        assert_eq!(g.samples(), samples.as_slice());
        assert_eq!(Greeting::from_wav(&g.to_wav_bytes()), Ok(g));
    }

    #[test]
    fn a_mu_law_wav_is_read() {
        let codes: Vec<u8> = (0..=255u8).cycle().take(8_000).collect();
        let g =
            Greeting::from_wav(&raw_wav(WAVE_FORMAT_MULAW, 1, 8_000, 8, &codes)).expect("valid");
        let mut expected = Vec::new();
        g711::decode(Codec::Pcmu, &codes, &mut expected);
        // Through f32 and back: exact for every 16-bit value.
        assert_eq!(g.samples(), expected.as_slice());
        assert_eq!(g.duration_ms(), 1_000);
    }

    #[test]
    fn an_a_law_stereo_wav_with_an_odd_data_chunk_is_read() {
        let codes: Vec<u8> = [0xD5u8, 0xD5]
            .repeat(400)
            .into_iter()
            .chain([0x55])
            .collect();
        // 801 bytes of stereo: the last half frame is ignored.
        let g = Greeting::from_wav(&raw_wav(WAVE_FORMAT_ALAW, 2, 8_000, 8, &codes)).expect("valid");
        assert_eq!(g.samples().len(), 400);
        assert!(g.samples().iter().all(|&s| s == 8));
    }

    #[test]
    fn a_mu_law_wav_in_an_extensible_header_is_read() {
        let mut bytes = raw_wav(WAVE_FORMAT_MULAW, 1, 8_000, 8, &[0xFF; 160]);
        // Rewrite the fmt chunk as WAVE_FORMAT_EXTENSIBLE with the µ-law SubFormat GUID.
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&WAVE_FORMAT_EXTENSIBLE.to_le_bytes());
        fmt.extend_from_slice(&bytes[22..36]);
        fmt.extend_from_slice(&22u16.to_le_bytes());
        fmt.extend_from_slice(&8u16.to_le_bytes());
        fmt.extend_from_slice(&4u32.to_le_bytes());
        fmt.extend_from_slice(&[
            0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38,
            0x9B, 0x71,
        ]);
        let rest = bytes.split_off(38);
        bytes.truncate(16);
        bytes.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&fmt);
        bytes.extend_from_slice(&rest);
        let g = Greeting::from_wav(&bytes).expect("valid");
        assert_eq!(g.samples().len(), 160);
    }

    #[test]
    fn frames_are_20_ms_and_the_last_is_padded_with_silence() {
        let samples: Vec<i16> = vec![1_000; 1_234];
        let g = Greeting::from_wav(&wav(spec(1, 8_000, 16, false), &samples)).expect("valid");
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let frames = g.frames(codec);
            // ceil(154.25 ms / 20 ms) = 8.
            assert_eq!(frames.len(), 8);
            assert!(frames.iter().all(|f| f.len() == FRAME_SAMPLES));
            let last = &frames[7];
            let mut loud = Vec::new();
            g711::encode(codec, &[1_000], &mut loud);
            assert_eq!(last[1_234 - 7 * 160 - 1], loud[0]);
            assert!(
                last[1_234 - 7 * 160..]
                    .iter()
                    .all(|&b| b == codec.silence_byte())
            );
        }
        let exact =
            Greeting::from_wav(&wav(spec(1, 8_000, 16, false), &[0i16; 320])).expect("valid");
        assert_eq!(exact.frames(Codec::Pcmu).len(), 2);
    }

    #[test]
    fn the_beep_is_400_ms_of_1_khz() {
        let beep = Greeting::beep();
        assert_eq!(beep.duration_ms(), 400);
        assert_eq!(beep.frames(Codec::Pcma).len(), 20);
        let peak = beep.samples().iter().map(|s| s.unsigned_abs()).max();
        assert_eq!(peak, Some(6_000));
        // 1 kHz for 0.4 s: 400 rising zero crossings.
        let rising = beep
            .samples()
            .windows(2)
            .filter(|w| w[0] <= 0 && w[1] > 0)
            .count();
        assert!((399..=401).contains(&rising), "{rising}");
        assert_eq!(beep.samples().first(), Some(&0));
    }

    #[test]
    fn garbage_empty_and_long_uploads_are_refused() {
        assert_eq!(Greeting::from_wav(b""), Err(GreetingError::NotWav));
        assert_eq!(
            Greeting::from_wav(b"ID3\x04 an mp3 file"),
            Err(GreetingError::NotWav)
        );
        assert_eq!(
            Greeting::from_wav(&wav::<i16>(spec(1, 8_000, 16, false), &[])),
            Err(GreetingError::Empty)
        );
        assert_eq!(
            Greeting::from_wav(&raw_wav(WAVE_FORMAT_MULAW, 1, 8_000, 8, &[])),
            Err(GreetingError::Empty)
        );
        let long = vec![0i16; 8_000 * 120 + 1];
        assert_eq!(
            Greeting::from_wav(&wav(spec(1, 8_000, 16, false), &long)),
            Err(GreetingError::TooLong { seconds: 121 })
        );
        let just_right = vec![0i16; 8_000 * 120];
        assert!(Greeting::from_wav(&wav(spec(1, 8_000, 16, false), &just_right)).is_ok());
        let long_ulaw = vec![0xFFu8; 16_000 * 121];
        assert_eq!(
            Greeting::from_wav(&raw_wav(WAVE_FORMAT_MULAW, 1, 16_000, 8, &long_ulaw)),
            Err(GreetingError::TooLong { seconds: 121 })
        );
    }

    #[test]
    fn unsupported_layouts_say_what_to_use() {
        let cases = [
            wav(spec(1, 96_000, 16, false), &[0i16; 100]),
            wav(spec(1, 4_000, 16, false), &[0i16; 100]),
            wav(spec(4, 8_000, 16, false), &[0i16; 400]),
            raw_wav(0x0002, 1, 8_000, 4, &[0u8; 100]),
            raw_wav(0x0055, 1, 8_000, 16, &[0u8; 100]),
            raw_wav(WAVE_FORMAT_MULAW, 1, 8_000, 16, &[0u8; 100]),
        ];
        for bytes in cases {
            let e = Greeting::from_wav(&bytes).expect_err("unsupported");
            assert!(matches!(e, GreetingError::Unsupported(_)), "{e}");
            assert!(e.to_string().contains("16-bit PCM"), "{e}");
        }
    }

    #[test]
    fn damaged_files_are_refused_or_read_as_far_as_they_go() {
        let good = wav(spec(1, 8_000, 16, false), &[500i16; 1_000]);
        // Cut inside the header.
        for cut in [12, 20, 30, 40] {
            let e = Greeting::from_wav(&good[..cut]).expect_err("damaged");
            assert!(matches!(e, GreetingError::Malformed(_)), "cut {cut}: {e}");
        }
        // Cut inside the data: what is there is kept.
        let g = Greeting::from_wav(&good[..44 + 600]).expect("truncated data is kept");
        assert_eq!(g.samples().len(), 300);
        // No data chunk at all.
        let mut no_data = good[..36].to_vec();
        no_data.extend_from_slice(b"LIST\x04\x00\x00\x00abcd");
        assert!(matches!(
            Greeting::from_wav(&no_data),
            Err(GreetingError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Greeting::from_wav(&bytes);
            let mut riff = b"RIFF\x00\x00\x00\x00WAVE".to_vec();
            riff.extend_from_slice(&bytes);
            let _ = Greeting::from_wav(&riff);
        }

        #[test]
        fn damaged_headers_never_panic(
            flips in proptest::collection::vec((0usize..60, any::<u8>()), 1..6),
            mu_law in any::<bool>(),
        ) {
            let mut bytes = if mu_law {
                raw_wav(WAVE_FORMAT_MULAW, 1, 8_000, 8, &[0x55; 64])
            } else {
                wav(spec(2, 16_000, 16, false), &[1_000i16; 64])
            };
            for (at, value) in flips {
                if let Some(b) = bytes.get_mut(at) {
                    *b = value;
                }
            }
            if let Ok(g) = Greeting::from_wav(&bytes) {
                prop_assert!(!g.samples().is_empty());
                prop_assert!(g.duration_ms() <= u64::from(MAX_DURATION_S) * 1_000);
            }
        }
    }
}
