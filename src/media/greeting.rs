//! Voicemail greetings: the WAV an admin uploads, turned into 8 kHz mono and played as
//! 20 ms G.711 frames; and the tone that tells the caller to speak.
//!
//! Any PCM WAV hound reads (8–32 bit integer, 32 bit float, mono or stereo, 8–48 kHz) and
//! G.711 WAVs (format tags 6 and 7, which hound does not read) are accepted. Other rates
//! are brought to 8 kHz by averaging each output sample's input span (a box filter, which
//! keeps the aliasing of a 16 or 48 kHz voice recording well below speech level) — good
//! enough for a spoken greeting, and no resampling crate to carry.

use std::io::Cursor;

use super::g711::{self, Codec};

pub const RATE: u32 = 8000;
/// Longest greeting accepted.
pub const MAX_SECONDS: u64 = 120;
/// Samples in one 20 ms RTP frame at 8 kHz.
pub const FRAME: usize = 160;

#[derive(Debug, thiserror::Error)]
pub enum GreetingError {
    #[error("the file is not a WAV file this gateway can read ({0}); upload PCM or G.711 WAV")]
    NotWav(String),
    #[error("the greeting is empty")]
    Empty,
    #[error("the greeting lasts {seconds} s; the limit is {MAX_SECONDS} s")]
    TooLong { seconds: u64 },
    #[error("a sample rate of {0} Hz is not supported; use 8000 to 48000 Hz")]
    Rate(u32),
}

/// A greeting as played: 8 kHz mono samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    samples: Vec<i16>,
}

impl Greeting {
    pub fn from_wav(bytes: &[u8]) -> Result<Greeting, GreetingError> {
        let (rate, channels, samples) = match hound::WavReader::new(Cursor::new(bytes)) {
            Ok(reader) => read_pcm(reader)?,
            Err(hound::Error::Unsupported) => read_g711(bytes)?,
            Err(err) => return Err(GreetingError::NotWav(err.to_string())),
        };
        if !(8000..=48_000).contains(&rate) {
            return Err(GreetingError::Rate(rate));
        }
        let channels = usize::from(channels.max(1));
        let mono: Vec<i32> = samples
            .chunks(channels)
            .map(|frame| frame.iter().sum::<i32>() / frame.len() as i32)
            .collect();
        if mono.is_empty() {
            return Err(GreetingError::Empty);
        }
        let seconds = mono.len() as u64 / u64::from(rate);
        if seconds > MAX_SECONDS {
            return Err(GreetingError::TooLong { seconds });
        }
        Ok(Greeting {
            samples: resample(&mono, rate),
        })
    }

    /// The tone before the recording starts: 400 ms of 1 kHz at about −12 dBFS.
    pub fn beep() -> Greeting {
        let samples = (0..3200)
            .map(|n| {
                let phase = 2.0 * std::f64::consts::PI * 1000.0 * f64::from(n) / f64::from(RATE);
                (phase.sin() * 8000.0) as i16
            })
            .collect();
        Greeting { samples }
    }

    pub fn duration_ms(&self) -> u64 {
        self.samples.len() as u64 * 1000 / u64::from(RATE)
    }

    /// 20 ms frames of G.711, the last one padded with silence.
    pub fn frames(&self, codec: Codec) -> Vec<Vec<u8>> {
        self.samples
            .chunks(FRAME)
            .map(|chunk| {
                let mut frame = Vec::with_capacity(FRAME);
                g711::encode(codec, chunk, &mut frame);
                frame.resize(FRAME, codec.silence_byte());
                frame
            })
            .collect()
    }

    /// The greeting as stored: an 8 kHz mono 16-bit WAV.
    pub fn to_wav_bytes(&self) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut out = Cursor::new(Vec::new());
        // Writing to memory cannot fail for a few MB of samples.
        if let Ok(mut writer) = hound::WavWriter::new(&mut out, spec) {
            for s in &self.samples {
                let _ = writer.write_sample(*s);
            }
            let _ = writer.finalize();
        }
        out.into_inner()
    }
}

type Pcm = (u32, u16, Vec<i32>);

fn read_pcm(reader: hound::WavReader<Cursor<&[u8]>>) -> Result<Pcm, GreetingError> {
    let spec = reader.spec();
    let too_long =
        u64::from(reader.duration()) > (MAX_SECONDS + 1) * u64::from(spec.sample_rate.max(1));
    if too_long {
        return Err(GreetingError::TooLong {
            seconds: u64::from(reader.duration()) / u64::from(spec.sample_rate.max(1)),
        });
    }
    let samples: Result<Vec<i32>, hound::Error> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .into_samples::<f32>()
            .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i32))
            .collect(),
        hound::SampleFormat::Int => {
            let shift = i32::from(spec.bits_per_sample.saturating_sub(16));
            let up = i32::from(16u16.saturating_sub(spec.bits_per_sample));
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| if shift > 0 { v >> shift } else { v << up }))
                .collect()
        }
    };
    let samples = samples.map_err(|e| GreetingError::NotWav(e.to_string()))?;
    Ok((spec.sample_rate, spec.channels, samples))
}

/// A RIFF/WAVE file whose `fmt ` chunk says A-law (6) or µ-law (7), 8 bits per sample.
fn read_g711(bytes: &[u8]) -> Result<Pcm, GreetingError> {
    let not = |why: &str| GreetingError::NotWav(why.to_owned());
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(not("no RIFF/WAVE header"));
    }
    let mut at = 12;
    let mut format = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
            as usize;
        let body = at + 8;
        let end = body.saturating_add(size).min(bytes.len());
        if id == b"fmt " && end - body >= 16 {
            let tag = u16::from_le_bytes([bytes[body], bytes[body + 1]]);
            let channels = u16::from_le_bytes([bytes[body + 2], bytes[body + 3]]);
            let rate = u32::from_le_bytes([
                bytes[body + 4],
                bytes[body + 5],
                bytes[body + 6],
                bytes[body + 7],
            ]);
            let codec = match tag {
                6 => Codec::Pcma,
                7 => Codec::Pcmu,
                _ => return Err(not("an audio format other than PCM or G.711")),
            };
            format = Some((codec, channels, rate));
        } else if id == b"data" {
            let Some((codec, channels, rate)) = format else {
                return Err(not("data before the format chunk"));
            };
            let mut linear = Vec::with_capacity(end - body);
            g711::decode(codec, &bytes[body..end], &mut linear);
            return Ok((rate, channels, linear.into_iter().map(i32::from).collect()));
        }
        // Chunks are padded to an even length.
        at = body.saturating_add(size + size % 2);
    }
    Err(not("no data chunk"))
}

/// To 8 kHz: each output sample is the mean of the input samples its span covers.
fn resample(input: &[i32], rate: u32) -> Vec<i16> {
    if rate == RATE {
        return input
            .iter()
            .map(|s| (*s).clamp(-32768, 32767) as i16)
            .collect();
    }
    let ratio = f64::from(rate) / f64::from(RATE);
    let out_len = (input.len() as f64 / ratio).floor() as usize;
    (0..out_len)
        .map(|n| {
            let start = (n as f64 * ratio) as usize;
            let end = (((n + 1) as f64 * ratio) as usize).clamp(start + 1, input.len());
            let span = &input[start.min(input.len() - 1)..end];
            let mean = span.iter().map(|s| i64::from(*s)).sum::<i64>() / span.len().max(1) as i64;
            mean.clamp(-32768, 32767) as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, channels: u16, seconds: f64, bits: u16) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: hound::SampleFormat::Int,
        };
        let mut out = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut out, spec).unwrap();
        let frames = (f64::from(rate) * seconds) as u32;
        for n in 0..frames {
            let v = ((2.0 * std::f64::consts::PI * 440.0 * f64::from(n) / f64::from(rate)).sin()
                * 10_000.0) as i32;
            for _ in 0..channels {
                if bits == 16 {
                    writer.write_sample(v as i16).unwrap();
                } else {
                    writer.write_sample(v << (bits - 16)).unwrap();
                }
            }
        }
        writer.finalize().unwrap();
        out.into_inner()
    }

    #[test]
    fn a_16_khz_stereo_file_becomes_8_khz_mono_of_the_same_length() {
        let greeting = Greeting::from_wav(&wav(16_000, 2, 1.5, 16)).unwrap();
        assert_eq!(greeting.duration_ms(), 1500);
        assert!(greeting.samples.iter().any(|s| s.unsigned_abs() > 5000));
        assert_eq!(greeting.frames(Codec::Pcmu).len(), 75);
    }

    #[test]
    fn a_24_bit_48_khz_file_is_read() {
        let greeting = Greeting::from_wav(&wav(48_000, 1, 0.5, 24)).unwrap();
        assert_eq!(greeting.duration_ms(), 500);
    }

    #[test]
    fn a_mu_law_wav_is_read() {
        let mut body = Vec::new();
        g711::encode(Codec::Pcmu, &[1000i16; 8000], &mut body);
        let mut file = Vec::new();
        file.extend_from_slice(b"RIFF");
        file.extend_from_slice(&(4 + 8 + 18 + 8 + body.len() as u32).to_le_bytes());
        file.extend_from_slice(b"WAVEfmt ");
        file.extend_from_slice(&18u32.to_le_bytes());
        file.extend_from_slice(&7u16.to_le_bytes());
        file.extend_from_slice(&1u16.to_le_bytes());
        file.extend_from_slice(&8000u32.to_le_bytes());
        file.extend_from_slice(&8000u32.to_le_bytes());
        file.extend_from_slice(&1u16.to_le_bytes());
        file.extend_from_slice(&8u16.to_le_bytes());
        file.extend_from_slice(&0u16.to_le_bytes());
        file.extend_from_slice(b"data");
        file.extend_from_slice(&(body.len() as u32).to_le_bytes());
        file.extend_from_slice(&body);
        let greeting = Greeting::from_wav(&file).unwrap();
        assert_eq!(greeting.duration_ms(), 1000);
        assert!(greeting.samples.iter().all(|s| (900..1100).contains(s)));
    }

    #[test]
    fn frames_are_20_ms_and_the_last_is_padded() {
        let greeting = Greeting::from_wav(&wav(8000, 1, 0.03, 16)).unwrap();
        let frames = greeting.frames(Codec::Pcma);
        assert_eq!(frames.len(), 2);
        assert!(frames.iter().all(|f| f.len() == FRAME));
        assert_eq!(frames[1][100], g711::SILENCE_PCMA);
        assert_eq!(Greeting::beep().duration_ms(), 400);
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        assert!(matches!(
            Greeting::from_wav(b"hello"),
            Err(GreetingError::NotWav(_))
        ));
        assert!(matches!(
            Greeting::from_wav(&wav(8000, 1, 0.0, 16)),
            Err(GreetingError::Empty)
        ));
        assert!(matches!(
            Greeting::from_wav(&wav(8000, 1, 121.0, 16)),
            Err(GreetingError::TooLong { .. })
        ));
        assert!(matches!(
            Greeting::from_wav(&wav(4000, 1, 1.0, 16)),
            Err(GreetingError::Rate(4000))
        ));
    }

    #[test]
    fn the_stored_form_reads_back_the_same() {
        let greeting = Greeting::from_wav(&wav(16_000, 1, 0.2, 16)).unwrap();
        assert_eq!(
            Greeting::from_wav(&greeting.to_wav_bytes()).unwrap(),
            greeting
        );
    }
}
