//! G.711 companding: µ-law (PCMU, RTP payload type 0) and A-law (PCMA, payload type 8).
//!
//! Owns the conversion between 16-bit linear PCM and the 8-bit G.711 code words that the
//! relay, the recorder and the greeting player exchange, plus the codec vocabulary the SDP
//! code needs (payload type, rtpmap name, silence byte). Pure: no I/O, no allocation beyond
//! the caller's output buffer, and no input can make it panic (every byte is a valid code
//! word, every `i16` a valid sample).
//!
//! The algorithm is the segment/bias one of ITU-T G.711 (1988), section 3 and tables 1a/2a:
//! µ-law works on 14-bit linear samples, A-law on 13-bit ones, so a 16-bit sample is first
//! shifted right by 2 or 3 bits. The decoder returns the middle of the decision interval
//! of a code, scaled back to 16 bits. Decoding uses tables built at compile time from the
//! same formula, so there is no hand-typed table to get wrong.

/// The µ-law code word for zero (positive zero; `0x7F` is negative zero).
pub const SILENCE_PCMU: u8 = 0xFF;
/// The A-law code word the encoder produces for zero (A-law has no exact zero: `0xD5`
/// decodes to +8).
pub const SILENCE_PCMA: u8 = 0xD5;

/// A G.711 variant, as negotiated in SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// µ-law, static RTP payload type 0 (RFC 3551 table 4).
    Pcmu,
    /// A-law, static RTP payload type 8 (RFC 3551 table 4).
    Pcma,
}

impl Codec {
    /// The codec of a static RTP payload type; `None` for anything but 0 and 8
    /// (telephone-event, comfort noise and dynamic types are not G.711 audio).
    pub fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The static RTP payload type of this codec.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The encoding name in an SDP `a=rtpmap` line (RFC 4566, RFC 3551).
    pub fn rtpmap_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The code word the encoder produces for a zero sample: what fills a frame that
    /// has no audio (padding of the last greeting frame, comfort silence).
    pub fn silence_byte(self) -> u8 {
        match self {
            Codec::Pcmu => SILENCE_PCMU,
            Codec::Pcma => SILENCE_PCMA,
        }
    }
}

/// Decodes G.711 `payload` and appends one 16-bit sample per byte to `out` (the buffer is
/// not cleared, so a caller can decode several packets into one buffer).
pub fn decode(codec: Codec, payload: &[u8], out: &mut Vec<i16>) {
    let table = match codec {
        Codec::Pcmu => &ULAW_DECODE,
        Codec::Pcma => &ALAW_DECODE,
    };
    out.extend(payload.iter().map(|&b| table[usize::from(b)]));
}

/// Encodes 16-bit `samples` and appends one G.711 byte per sample to `out` (the buffer is
/// not cleared).
pub fn encode(codec: Codec, samples: &[i16], out: &mut Vec<u8>) {
    match codec {
        Codec::Pcmu => out.extend(samples.iter().map(|&s| ulaw_encode(s))),
        Codec::Pcma => out.extend(samples.iter().map(|&s| alaw_encode(s))),
    }
}

/// G.711 µ-law bias in the 14-bit domain (33; 0x84 = 132 once scaled to 16 bits). Adding
/// it makes every segment boundary a power of two, so the segment is a bit position.
const ULAW_BIAS: i32 = 0x21;
/// Largest biased 14-bit magnitude: anything above saturates to the top code word.
const ULAW_MAX_BIASED: i32 = 0x1FFF;

/// Encodes one sample to µ-law (G.711 table 2a, via the biased segment search).
pub fn ulaw_encode(sample: i16) -> u8 {
    // G.711 µ-law is defined on 14-bit samples; the 2 low bits are below its resolution.
    let x = i32::from(sample) >> 2;
    // Negative samples take the one's complement, as in the ITU-T G.191 reference code,
    // so the quantiser is symmetric: -1 lands in negative zero as +1 lands in positive
    // zero. Code words are sent inverted (bit 7 set = positive), hence the two masks.
    let (magnitude, mask) = if x < 0 { (!x, 0x7F) } else { (x, 0xFF) };
    let biased = (magnitude + ULAW_BIAS).min(ULAW_MAX_BIASED);
    // biased is in [32 << seg, 64 << seg): its highest set bit is seg + 5.
    let segment = highest_bit(biased) - 5;
    let mantissa = (biased >> (segment + 1)) & 0x0F;
    // Both values are < 16, so the code fits a byte.
    let code = ((segment << 4) | mantissa) as u8;
    code ^ mask
}

/// Decodes one µ-law code word to a 16-bit sample.
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_DECODE[usize::from(code)]
}

/// Encodes one sample to A-law (G.711 table 1a).
pub fn alaw_encode(sample: i16) -> u8 {
    // G.711 A-law is defined on 13-bit samples.
    let x = i32::from(sample) >> 3;
    // A-law is symmetric around zero with no zero code: -1 maps to the smallest negative
    // magnitude (one's complement), and even bits are inverted on the line (0x55).
    let (magnitude, mask) = if x >= 0 { (x, 0xD5) } else { (!x, 0x55) };
    // Segments 0 and 1 share the step size 2; from segment 2 on, magnitude is in
    // [16 << seg, 32 << seg).
    let segment = if magnitude < 32 {
        0
    } else {
        highest_bit(magnitude) - 4
    };
    let shift = if segment < 2 { 1 } else { segment };
    let mantissa = (magnitude >> shift) & 0x0F;
    let code = ((segment << 4) | mantissa) as u8;
    code ^ mask
}

/// Decodes one A-law code word to a 16-bit sample.
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DECODE[usize::from(code)]
}

/// Index of the highest set bit of a positive value (callers pass 1..=0x1FFF).
fn highest_bit(value: i32) -> i32 {
    31 - value.leading_zeros() as i32
}

/// µ-law decoder: the middle of the code's decision interval, in 16-bit units.
const fn ulaw_decode_formula(code: u8) -> i16 {
    let u = !code;
    let mantissa = (u & 0x0F) as i32;
    let segment = ((u & 0x70) >> 4) as i32;
    // ((2 * mantissa + 33) << segment) - 33 in 14-bit units, times 4.
    let t = ((mantissa << 3) + 0x84) << segment;
    if u & 0x80 != 0 {
        (0x84 - t) as i16
    } else {
        (t - 0x84) as i16
    }
}

/// A-law decoder: the middle of the code's decision interval, in 16-bit units.
const fn alaw_decode_formula(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mantissa = ((a & 0x0F) as i32) << 4;
    let segment = ((a & 0x70) >> 4) as i32;
    let t = match segment {
        0 => mantissa + 8,
        1 => mantissa + 0x108,
        _ => (mantissa + 0x108) << (segment - 1),
    };
    if a & 0x80 != 0 { t as i16 } else { -t as i16 }
}

const ULAW_DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = ulaw_decode_formula(i as u8);
        i += 1;
    }
    table
};

const ALAW_DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = alaw_decode_formula(i as u8);
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn payload_types_and_names_follow_rfc_3551() {
        assert_eq!(Codec::from_payload_type(0), Some(Codec::Pcmu));
        assert_eq!(Codec::from_payload_type(8), Some(Codec::Pcma));
        for pt in [3, 9, 13, 18, 96, 101, 127, 255] {
            assert_eq!(Codec::from_payload_type(pt), None, "pt {pt}");
        }
        for codec in [Codec::Pcmu, Codec::Pcma] {
            assert_eq!(Codec::from_payload_type(codec.payload_type()), Some(codec));
        }
        assert_eq!(Codec::Pcmu.rtpmap_name(), "PCMU");
        assert_eq!(Codec::Pcma.rtpmap_name(), "PCMA");
    }

    #[test]
    fn known_ulaw_values() {
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0x7E), -8);
        assert_eq!(ulaw_encode(0), SILENCE_PCMU);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        // Below the 14-bit resolution, a small negative sample is negative zero.
        assert_eq!(ulaw_encode(-1), 0x7F);
    }

    #[test]
    fn known_alaw_values() {
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_encode(0), SILENCE_PCMA);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn silence_bytes_decode_to_near_zero() {
        assert_eq!(Codec::Pcmu.silence_byte(), SILENCE_PCMU);
        assert_eq!(Codec::Pcma.silence_byte(), SILENCE_PCMA);
        assert_eq!(ulaw_decode(SILENCE_PCMU), 0);
        assert_eq!(alaw_decode(SILENCE_PCMA), 8);
    }

    /// Every code word survives decode then encode, except µ-law negative zero: G.711
    /// gives 0x7F and 0xFF the same decoder output (0), and the encoder maps 0 to +0.
    #[test]
    fn every_code_word_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(b)), b, "A-law {b:#04x}");
            let expected = if b == 0x7F { 0xFF } else { b };
            assert_eq!(ulaw_encode(ulaw_decode(b)), expected, "µ-law {b:#04x}");
        }
    }

    /// The largest error a sample can have after encode/decode: half the step of its
    /// segment, the bits G.711 drops before quantising, and above the top decision
    /// value, the clipping.
    fn error_bound(codec: Codec, code: u8, x: i16) -> i32 {
        let (half_step, dropped, top) = match codec {
            Codec::Pcmu => {
                let segment = i32::from(((!code) & 0x70) >> 4);
                (4 << segment, 3, 32124)
            }
            Codec::Pcma => {
                let segment = i32::from(((code ^ 0x55) & 0x70) >> 4);
                (4 << segment.max(1), 7, 32256)
            }
        };
        (half_step + dropped).max(i32::from(x).abs() - top)
    }

    #[test]
    fn every_sample_decodes_within_the_quantisation_error() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut previous = i16::MIN;
            for x in i16::MIN..=i16::MAX {
                let mut code = Vec::new();
                encode(codec, &[x], &mut code);
                let mut back = Vec::new();
                decode(codec, &code, &mut back);
                let y = back[0];
                let error = (i32::from(y) - i32::from(x)).abs();
                assert!(
                    error <= error_bound(codec, code[0], x),
                    "{codec:?}: {x} -> {:#04x} -> {y} (error {error})",
                    code[0]
                );
                // The quantiser is monotonic: a louder sample never decodes quieter.
                assert!(y >= previous, "{codec:?}: not monotonic at {x}");
                previous = y;
            }
        }
    }

    proptest! {
        #[test]
        fn buffers_match_the_sample_functions(samples in proptest::collection::vec(any::<i16>(), 0..400)) {
            for codec in [Codec::Pcmu, Codec::Pcma] {
                let mut bytes = vec![0xAB];
                encode(codec, &samples, &mut bytes);
                prop_assert_eq!(bytes.len(), samples.len() + 1);
                let mut decoded = vec![7];
                decode(codec, &bytes[1..], &mut decoded);
                prop_assert_eq!(decoded.len(), samples.len() + 1);
                for (i, &x) in samples.iter().enumerate() {
                    let (e, d) = match codec {
                        Codec::Pcmu => (ulaw_encode(x), ulaw_decode(ulaw_encode(x))),
                        Codec::Pcma => (alaw_encode(x), alaw_decode(alaw_encode(x))),
                    };
                    prop_assert_eq!(bytes[i + 1], e);
                    prop_assert_eq!(decoded[i + 1], d);
                }
            }
        }

        #[test]
        fn decode_then_encode_is_stable(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            for codec in [Codec::Pcmu, Codec::Pcma] {
                let mut samples = Vec::new();
                decode(codec, &bytes, &mut samples);
                let mut again = Vec::new();
                encode(codec, &samples, &mut again);
                for (&b, &a) in bytes.iter().zip(&again) {
                    let expected = if codec == Codec::Pcmu && b == 0x7F { 0xFF } else { b };
                    prop_assert_eq!(a, expected);
                }
            }
        }
    }
}
