//! Voicemail: the gateway answers the caller itself, plays the number's greeting and the
//! tone, and records what the caller says, up to the number's limit.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::g711::Codec;
use super::greeting::{FRAME_SAMPLES, Greeting};
use super::recording::{Channels, Recorder, RecordingError, RecordingSummary};
use super::sdp::{self, AudioOffer};
use super::{MediaEngine, MediaError, PortPair, Side};

#[derive(Debug, thiserror::Error)]
pub enum VoicemailError {
    #[error("the caller offers no G.711 audio")]
    NoCodec,
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Recording(#[from] RecordingError),
}

/// The gateway's side of a voicemail call: its port pair and the SDP answer to send.
pub struct VoicemailLine {
    pub answer: Vec<u8>,
    pair: PortPair,
    codec: Codec,
    caller: Option<SocketAddr>,
}

/// Answers the caller's offer with G.711 (the first of PCMU/PCMA the caller lists) on a
/// port pair of the relay's range.
pub fn answer(engine: &MediaEngine, offer: &[u8]) -> Result<VoicemailLine, VoicemailError> {
    let audio = sdp::audio(offer).unwrap_or_default();
    let codec = audio
        .payload_types
        .iter()
        .find_map(|pt| Codec::from_payload_type(*pt))
        .ok_or(VoicemailError::NoCodec)?;
    let pair = engine.pool().allocate()?;
    let answer = answer_sdp(engine.advertised(), pair.port(), codec, &audio);
    Ok(VoicemailLine {
        answer,
        caller: audio.rtp,
        pair,
        codec,
    })
}

fn answer_sdp(ip: std::net::IpAddr, port: u16, codec: Codec, _offer: &AudioOffer) -> Vec<u8> {
    let kind = if ip.is_ipv6() { "IP6" } else { "IP4" };
    let session = rand::random::<u32>();
    format!(
        "v=0\r\no=leadline {session} 1 IN {kind} {ip}\r\ns=leadline voicemail\r\n\
         c=IN {kind} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {pt}\r\n\
         a=rtpmap:{pt} {name}/8000\r\na=ptime:20\r\na=sendrecv\r\n",
        pt = codec.payload_type(),
        name = codec.rtpmap_name(),
    )
    .into_bytes()
}

/// Plays `greeting` (if any) and the tone, then records the caller into `path` until
/// `max` has passed or `hung_up` resolves. `None` if the caller hung up before the tone.
pub async fn take_message(
    line: VoicemailLine,
    greeting: Option<Greeting>,
    max: Duration,
    path: &Path,
    hung_up: impl std::future::Future<Output = ()>,
) -> Result<Option<RecordingSummary>, VoicemailError> {
    let VoicemailLine {
        pair,
        codec,
        mut caller,
        ..
    } = line;
    tokio::pin!(hung_up);
    let mut frames = greeting.map(|g| g.frames(codec)).unwrap_or_default();
    frames.extend(Greeting::beep().frames(codec));
    let ssrc = rand::random::<u32>();
    let mut sequence = rand::random::<u16>();
    let mut timestamp = rand::random::<u32>();
    let mut buffer = vec![0u8; 2048];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut latched = false;
    for (i, frame) in frames.iter().enumerate() {
        tokio::select! {
            () = &mut hung_up => return Ok(None),
            _ = tick.tick() => {}
        }
        // Symmetric RTP: once the caller has sent, its source is where it listens.
        while let Ok((_, source)) = pair.rtp.try_recv_from(&mut buffer) {
            if !latched {
                caller = Some(source);
                latched = true;
            }
        }
        let Some(to) = caller else { continue };
        let packet = rtp_rs::RtpPacketBuilder::new()
            .payload_type(codec.payload_type())
            .ssrc(ssrc)
            .sequence(rtp_rs::Seq::from(sequence))
            .timestamp(timestamp)
            .marked(i == 0)
            .payload(frame)
            .build();
        if let Ok(packet) = packet {
            let _ = pair.rtp.send_to(&packet, to).await;
        }
        sequence = sequence.wrapping_add(1);
        timestamp = timestamp.wrapping_add(FRAME_SAMPLES as u32);
    }
    let mut recorder = Recorder::create(path, Channels::Mixed)?;
    let started = tokio::time::Instant::now();
    let deadline = tokio::time::sleep(max);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut hung_up => break,
            () = &mut deadline => break,
            received = pair.rtp.recv_from(&mut buffer) => {
                let Ok((len, _)) = received else { continue };
                let Ok(rtp) = rtp_rs::RtpReader::new(&buffer[..len]) else { continue };
                let arrival = started.elapsed().as_micros() as u64 * 8 / 1000;
                recorder.packet(
                    Side::Caller,
                    rtp.payload_type(),
                    u16::from(rtp.sequence_number()),
                    rtp.timestamp(),
                    rtp.ssrc(),
                    rtp.payload(),
                    arrival,
                );
            }
        }
    }
    Ok(Some(recorder.finish()?))
}
