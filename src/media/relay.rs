//! The relay: one task per call moving RTP and RTCP between the caller-facing and the
//! callee-facing port pairs.
//!
//! Each side learns its party's address from that party's SDP and then latches to the
//! source of the first packet it receives (symmetric RTP, RFC 4961): a phone behind NAT
//! gets its media back at the address its packets came from, not the private one its
//! SDP names. Packets from any other source are dropped until the party's SDP changes.
//! The task keeps RFC 3550 receive statistics per direction, can hand audio packets to a
//! recorder, and reports a call whose media stopped (the media timeout).
//!
//! A caller waiting in a queue is answered by the gateway itself on the caller-facing
//! port pair ([`MediaSession::answer_caller`]) and hears the queue's [`Music`] from that
//! same port: the relay task listens to the queue's generator and sends each tick to the
//! caller's address (the latched one, or the SDP's until the caller sends). While music
//! plays, what the callee side sends is not passed to the caller (an agent's phone
//! ringing back would mix with it); once it stops, the callee's first RTP packet to the
//! caller is marked (RFC 3551 4.1: a new talkspurt, here from a new source).
//!
//! A leg whose party agreed SRTP ([`super::sdes`]) has its own keys: the relay decrypts
//! what that party sends before anything else looks at it (latching, statistics, the
//! recorder all see plain RTP) and encrypts what goes to it, so the two legs of a call
//! can differ. A packet that fails authentication is dropped and counted.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Notify, broadcast, mpsc};

use super::g711::Codec;
use super::greeting::FRAME_SAMPLES;
use super::music::{Announcement, Music, RTP_HEADER, RtpStream, Tick};
use super::sdes::{self, Crypto, LegMedia, MasterKey, Refusal};
use super::sdp::{self, AudioOffer, Origin, RelayAddress};
use super::srtp::{Kind, LegSrtp};
use super::stats::StreamStats;
use super::{MediaError, PortPair, PortPool, Side};

/// What every call's media shares: the port range, the address put in SDP, the timeout.
pub struct MediaEngine {
    pool: PortPool,
    advertised: IpAddr,
    timeout: Duration,
}

impl MediaEngine {
    /// `advertised` is the address parties send media to (the gateway's public address).
    pub fn new(pool: PortPool, advertised: IpAddr, timeout: Duration) -> Self {
        Self {
            pool,
            advertised,
            timeout,
        }
    }

    pub fn pool(&self) -> &PortPool {
        &self.pool
    }

    /// The address written in SDP.
    pub fn advertised(&self) -> IpAddr {
        self.advertised
    }

    /// How long a talking call may go without media.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Allocates a call's two port pairs and starts its relay task.
    pub fn session(&self) -> Result<MediaSession, MediaError> {
        let caller = self.pool.allocate()?;
        let callee = self.pool.allocate()?;
        let ports = [caller.port(), callee.port()];
        let (control, commands) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let relay = RelayTask {
            pairs: [caller, callee],
            legs: [LegState::default(), LegState::default()],
            shared: shared.clone(),
            timeout: self.timeout,
            started: Instant::now(),
            armed: false,
            tap: None,
            player: None,
            music_out: None,
            mark_callee: false,
        };
        let task = tokio::spawn(relay.run(commands));
        let session_id = u64::from(rand::random::<u32>());
        Ok(MediaSession {
            control,
            ports,
            advertised: self.advertised,
            origins: Mutex::new([Origin::new(session_id), Origin::new(session_id + 1)]),
            tls: [AtomicBool::new(false), AtomicBool::new(false)],
            keys: Mutex::new([None, None]),
            shared,
            task: Mutex::new(Some(task)),
        })
    }
}

/// One packet of audio handed to a recorder.
#[derive(Debug, Clone)]
pub struct TappedPacket {
    /// The party that sent it.
    pub from: Side,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
    /// When it arrived, in 8 kHz samples since the relay started.
    pub arrival_samples: u64,
}

/// How many packets may wait for a slow recorder before packets are dropped from the
/// recording (never from the call).
pub const TAP_QUEUE: usize = 1024;

/// Statistics of one direction of a call's media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DirectionStats {
    /// RTP packets received from this party.
    pub packets: u64,
    /// RTP and RTCP packets sent on to the other party.
    pub relayed: u64,
    /// Packets the RTP sequence numbers say never arrived.
    pub lost: u64,
    /// RFC 3550 interarrival jitter of what this party sent, in milliseconds.
    pub jitter_ms: f64,
    /// Packets dropped because they came from an address other than the latched one.
    pub foreign: u64,
    /// SRTP/SRTCP packets dropped because they failed authentication (or were replays).
    pub auth_failures: u64,
}

/// A call's media statistics, by who sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MediaStats {
    pub from_caller: DirectionStats,
    pub from_callee: DirectionStats,
    /// The relay ended the call: no packets for the media timeout.
    pub timed_out: bool,
}

#[derive(Default)]
struct Shared {
    stats: Mutex<MediaStats>,
    dead: Notify,
}

enum Control {
    /// A party's latest SDP.
    Offer(Side, Option<AudioOffer>),
    /// The leg's SRTP keys (the party's, the relay's), or plain RTP.
    Keys(Side, Option<(MasterKey, MasterKey)>),
    /// The call is answered: silence from now on counts towards the timeout.
    Arm,
    /// Audio packets go here from now on.
    Tap(mpsc::Sender<TappedPacket>),
    /// Play music to the caller, after as many beeps.
    Play(Music, Codec, Option<u32>),
    /// The beeps again (a new position), then the music.
    Announce(u32),
    /// Back to relaying.
    StopPlaying,
    /// The call is over.
    Stop,
}

/// The handle a call keeps on its media; dropping it ends the relay and frees the ports.
pub struct MediaSession {
    control: mpsc::UnboundedSender<Control>,
    ports: [u16; 2],
    advertised: IpAddr,
    /// The origin of the SDP sent to each party.
    origins: Mutex<[Origin; 2]>,
    /// Whether each party's signalling is TLS: only then may its leg use SRTP.
    tls: [AtomicBool; 2],
    /// The relay's own SRTP key for each leg that agreed SRTP.
    keys: Mutex<[Option<Crypto>; 2]>,
    shared: Arc<Shared>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl MediaSession {
    /// The RTP port facing a party.
    pub fn port(&self, facing: Side) -> u16 {
        self.ports[facing.index()]
    }

    /// Marks a party's signalling as TLS (or not): SRTP is agreed only on such a leg.
    pub fn set_signalling_tls(&self, side: Side, tls: bool) {
        self.tls[side.index()].store(tls, Ordering::Relaxed);
    }

    /// Whether the relay would refuse `from`'s SDP (488): SRTP it cannot agree to.
    pub fn refusal(&self, from: Side, body: &[u8]) -> Option<Refusal> {
        let tls = self.tls[from.index()].load(Ordering::Relaxed);
        sdes::leg_media_security(&sdp::security(body), tls).err()
    }

    /// Decides `from`'s leg from its SDP and tells the relay its keys; the relay's own
    /// key of an SRTP leg, to put in the SDP that leg gets.
    fn negotiate(&self, from: Side, body: &[u8]) -> Result<Option<Crypto>, Refusal> {
        let tls = self.tls[from.index()].load(Ordering::Relaxed);
        let decision = sdes::leg_media_security(&sdp::security(body), tls);
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let ours = match &decision {
            Ok(LegMedia::Srtp(peer)) => {
                // A re-sent offer keeps the relay's key: only the tag follows the party's.
                let key = match &keys[from.index()] {
                    Some(ours) => ours.key.clone(),
                    None => MasterKey::from_bytes(rand::random()),
                };
                let _ = self
                    .control
                    .send(Control::Keys(from, Some((peer.key.clone(), key.clone()))));
                Some(Crypto { tag: peer.tag, key })
            }
            Ok(LegMedia::Plain) | Err(_) => {
                let _ = self.control.send(Control::Keys(from, None));
                None
            }
        };
        keys[from.index()] = ours.clone();
        decision.map(|_| ours)
    }

    /// Takes the SDP `from` sent and returns what its peer gets instead: the gateway's
    /// address and the port facing the peer, and the peer's leg's own SRTP key or plain
    /// RTP. The relay learns `from`'s media address and keys.
    ///
    /// SDP the relay must refuse ([`MediaSession::refusal`]) is relayed as plain RTP; the
    /// caller of this checks for a refusal first where it can still answer 488.
    pub fn sdp_from(&self, from: Side, body: &[u8]) -> Vec<u8> {
        if body.is_empty() {
            return Vec::new();
        }
        let _ = self.control.send(Control::Offer(from, sdp::audio(body)));
        if let Err(refusal) = self.negotiate(from, body) {
            tracing::warn!(%refusal, "SDP relayed as plain RTP");
        }
        let to = from.other();
        let peer_key = self.keys.lock().unwrap_or_else(|e| e.into_inner())[to.index()].clone();
        let body = sdp::secure(body, peer_key.as_ref());
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        sdp::rewrite(
            &body,
            RelayAddress {
                ip: self.advertised,
                rtp_port: self.ports[to.index()],
            },
            &mut origins[to.index()],
        )
    }

    /// The gateway answers the caller's `offer` itself (a caller waiting in a queue): the
    /// SDP to send the caller (our caller-facing port, the first of PCMU/PCMA the caller
    /// offers, plus telephone-event if offered) and that codec. Tells the relay the
    /// caller's address from the offer. Err when the offer has no G.711, or SRTP the
    /// relay cannot agree to (the answer has the relay's key when it can).
    ///
    /// The answer carries the caller-facing origin, so SDP sent to the caller later (the
    /// agent's, through [`MediaSession::sdp_from`]) continues its version.
    pub fn answer_caller(&self, offer: &[u8]) -> Result<(Vec<u8>, Codec), MediaError> {
        let audio = sdp::audio(offer).ok_or(MediaError::NoCodec)?;
        let codec = audio
            .payload_types
            .iter()
            .find_map(|pt| Codec::from_payload_type(*pt))
            .ok_or(MediaError::NoCodec)?;
        let event = sdp::telephone_events(offer)
            .into_iter()
            .find(|pt| audio.payload_types.contains(pt));
        let ours = self.negotiate(Side::Caller, offer)?;
        let _ = self.control.send(Control::Offer(Side::Caller, Some(audio)));
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        let answer = sdp::rewrite(
            &sdp::secure(&answer_template(codec, event), ours.as_ref()),
            RelayAddress {
                ip: self.advertised,
                rtp_port: self.ports[Side::Caller.index()],
            },
            &mut origins[Side::Caller.index()],
        );
        Ok((answer, codec))
    }

    /// Plays `music` to the caller in `codec` from the caller-facing port; with
    /// `position`, first that many short beeps (capped at 9) and a pause, then the music.
    pub fn play(&self, music: &Music, codec: Codec, position: Option<u32>) {
        let _ = self
            .control
            .send(Control::Play(music.clone(), codec, position));
    }

    /// The caller's position changed: the beeps again, then the music (no-op when not playing).
    pub fn announce(&self, position: u32) {
        let _ = self.control.send(Control::Announce(position));
    }

    /// Stops the music; the relay relays between the parties as before.
    pub fn stop_playing(&self) {
        let _ = self.control.send(Control::StopPlaying);
    }

    /// From now on a call whose media stops for the timeout is reported dead.
    pub fn arm_timeout(&self) {
        let _ = self.control.send(Control::Arm);
    }

    /// Sends the call's audio packets to a recorder.
    pub fn tap(&self, recorder: mpsc::Sender<TappedPacket>) {
        let _ = self.control.send(Control::Tap(recorder));
    }

    /// Resolves when no packet came from either party for the media timeout.
    pub async fn dead(&self) {
        self.shared.dead.notified().await;
    }

    /// The statistics so far (updated about once a second).
    pub fn stats(&self) -> MediaStats {
        *self.shared.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the relay, frees its ports and returns the final statistics.
    pub async fn close(self) -> MediaStats {
        self.stats_after_close().await
    }

    /// [`MediaSession::close`] for a shared session: the relay stops for every holder.
    pub async fn stats_after_close(&self) -> MediaStats {
        let _ = self.control.send(Control::Stop);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        self.stats()
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        // A call task that ends without `close` (a panic, an early return) still frees
        // its ports: the closed channel ends the relay; aborting makes sure of it.
        let task = self
            .task
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            task.abort();
        }
    }
}

/// The SDP the gateway answers a waiting caller with, before [`sdp::rewrite`] puts the
/// gateway's address, port and origin in.
fn answer_template(codec: Codec, event: Option<u8>) -> Vec<u8> {
    let pt = codec.payload_type();
    let mut body = format!(
        "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=leadline\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
         m=audio 9 RTP/AVP {pt}{events}\r\na=rtpmap:{pt} {name}/8000\r\n",
        events = event.map(|e| format!(" {e}")).unwrap_or_default(),
        name = codec.rtpmap_name(),
    );
    if let Some(event) = event {
        body.push_str(&format!(
            "a=rtpmap:{event} telephone-event/8000\r\na=fmtp:{event} 0-15\r\n"
        ));
    }
    body.push_str("a=ptime:20\r\na=sendrecv\r\n");
    body.into_bytes()
}

/// Music being played to the caller.
struct Player {
    ticks: broadcast::Receiver<Tick>,
    codec: Codec,
    announcement: Option<Announcement>,
    /// Keeps the queue's generator running while this caller listens.
    _music: Music,
}

/// The next tick of the music being played; never, when none is.
async fn next_tick(player: &mut Option<Player>) -> Result<Tick, broadcast::error::RecvError> {
    match player {
        Some(player) => player.ticks.recv().await,
        None => std::future::pending().await,
    }
}

#[derive(Default)]
struct LegState {
    offer: Option<AudioOffer>,
    rtp_peer: Option<SocketAddr>,
    rtcp_peer: Option<SocketAddr>,
    rtp_latched: bool,
    rtcp_latched: bool,
    stats: StreamStats,
    relayed: u64,
    foreign: u64,
    /// The leg's SRTP transform; `None` for plain RTP.
    srtp: Option<LegSrtp>,
    auth_failures: u64,
}

impl LegState {
    fn learn(&mut self, offer: Option<AudioOffer>) {
        let rtp = offer.as_ref().and_then(|o| o.rtp);
        let rtcp = offer.as_ref().and_then(|o| o.rtcp);
        // The same address again (a session refresh) keeps the latch: behind NAT the
        // latched source is right and the SDP's private address is not.
        let old_rtp = self.offer.as_ref().and_then(|o| o.rtp);
        if rtp != old_rtp || !self.rtp_latched {
            self.rtp_peer = rtp;
            self.rtp_latched = false;
        }
        let old_rtcp = self.offer.as_ref().and_then(|o| o.rtcp);
        if rtcp != old_rtcp || !self.rtcp_latched {
            self.rtcp_peer = rtcp;
            self.rtcp_latched = false;
        }
        self.offer = offer;
    }

    fn set_keys(&mut self, keys: Option<(MasterKey, MasterKey)>) {
        let Some((peer, ours)) = keys else {
            self.srtp = None;
            return;
        };
        if self.srtp.as_ref().is_some_and(|s| s.uses(&peer, &ours)) {
            return;
        }
        self.srtp = match LegSrtp::new(peer, ours) {
            Ok(srtp) => Some(srtp),
            Err(err) => {
                // Unreachable for keys `sdes` read; plain RTP would leak the audio.
                tracing::error!(%err, "SRTP leg without a transform");
                None
            }
        };
    }

    fn talking(&self) -> bool {
        self.offer.as_ref().is_none_or(AudioOffer::talking)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Channel {
    Rtp,
    Rtcp,
}

struct RelayTask {
    pairs: [PortPair; 2],
    legs: [LegState; 2],
    shared: Arc<Shared>,
    timeout: Duration,
    started: Instant,
    armed: bool,
    tap: Option<mpsc::Sender<TappedPacket>>,
    player: Option<Player>,
    /// The caller's music stream, kept across pauses so sequence numbers run on; and
    /// when it last sent.
    music_out: Option<(RtpStream, Instant)>,
    /// The callee's next RTP packet to the caller gets the marker bit (the music stopped).
    mark_callee: bool,
}

/// Packets taken from one socket per wake-up before the others get a turn.
const BURST: usize = 32;

impl RelayTask {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Control>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_packet = tokio::time::Instant::now();
        let mut buffer = vec![0u8; 2048];
        let mut timed_out = false;
        loop {
            let ready = {
                let [caller, callee] = &self.pairs;
                tokio::select! {
                    biased;
                    command = commands.recv() => match command {
                        Some(Control::Stop) | None => break,
                        Some(command) => Wake::Command(command),
                    },
                    _ = caller.rtp.readable() => Wake::Readable(Side::Caller, Channel::Rtp),
                    _ = callee.rtp.readable() => Wake::Readable(Side::Callee, Channel::Rtp),
                    _ = caller.rtcp.readable() => Wake::Readable(Side::Caller, Channel::Rtcp),
                    _ = callee.rtcp.readable() => Wake::Readable(Side::Callee, Channel::Rtcp),
                    music = next_tick(&mut self.player) => Wake::Music(music),
                    _ = tick.tick() => Wake::Tick,
                }
            };
            match ready {
                Wake::Command(Control::Offer(side, offer)) => self.legs[side.index()].learn(offer),
                Wake::Command(Control::Keys(side, keys)) => self.legs[side.index()].set_keys(keys),
                Wake::Command(Control::Arm) => {
                    self.armed = true;
                    last_packet = tokio::time::Instant::now();
                }
                Wake::Command(Control::Tap(tap)) => self.tap = Some(tap),
                Wake::Command(Control::Play(music, codec, position)) => {
                    self.start_playing(music, codec, position);
                }
                Wake::Command(Control::Announce(position)) => {
                    if let Some(player) = &mut self.player {
                        player.announcement = Some(Announcement::new(position));
                    }
                }
                Wake::Command(Control::StopPlaying) => {
                    if self.player.take().is_some() {
                        self.mark_callee = true;
                    }
                }
                Wake::Music(Ok(tick)) => self.play_frame(&tick),
                Wake::Music(Err(broadcast::error::RecvError::Lagged(missed))) => {
                    if let Some((stream, _)) = &mut self.music_out {
                        stream.skip((missed as u32).saturating_mul(FRAME_SAMPLES as u32));
                    }
                }
                Wake::Music(Err(broadcast::error::RecvError::Closed)) => self.player = None,
                Wake::Command(Control::Stop) => break,
                Wake::Readable(side, channel) => {
                    if self.drain(side, channel, &mut buffer) {
                        last_packet = tokio::time::Instant::now();
                    }
                }
                Wake::Tick => {
                    let talking = self.legs.iter().all(LegState::talking);
                    if self.armed && talking && !timed_out && last_packet.elapsed() >= self.timeout
                    {
                        timed_out = true;
                        self.publish(true);
                        self.shared.dead.notify_one();
                    } else {
                        self.publish(timed_out);
                    }
                }
            }
        }
        self.publish(timed_out);
    }

    fn start_playing(&mut self, music: Music, codec: Codec, position: Option<u32>) {
        match &mut self.music_out {
            // Playing again after a pause: the timestamp covers the pause, and the
            // audio restarts with a marked packet.
            Some((stream, last)) if self.player.is_none() => {
                let paused = last.elapsed().as_millis() as u64 * 8;
                stream.skip(paused as u32);
                stream.talkspurt();
            }
            Some(_) => {}
            None => self.music_out = Some((RtpStream::random(), Instant::now())),
        }
        self.player = Some(Player {
            ticks: music.listen(),
            codec,
            announcement: position.map(Announcement::new),
            _music: music,
        });
    }

    /// Sends the caller one frame: the announcement's while it lasts, else the music's.
    fn play_frame(&mut self, tick: &Tick) {
        let (Some(player), Some((stream, last))) = (&mut self.player, &mut self.music_out) else {
            return;
        };
        let codec = player.codec;
        let announced = player
            .announcement
            .as_mut()
            .and_then(|a| a.next_frame(codec));
        if announced.is_none() {
            player.announcement = None;
        }
        let payload = announced.unwrap_or_else(|| tick.payload(codec));
        let Some(to) = self.legs[Side::Caller.index()].rtp_peer else {
            stream.skip(FRAME_SAMPLES as u32);
            return;
        };
        let mut packet = [0u8; RTP_HEADER + FRAME_SAMPLES];
        let length = stream.packet(codec.payload_type(), payload, &mut packet);
        *last = Instant::now();
        let protected;
        let packet = match &mut self.legs[Side::Caller.index()].srtp {
            Some(srtp) => match srtp.protect(Kind::Rtp, &packet[..length]) {
                Ok(p) => {
                    protected = p;
                    &protected[..]
                }
                Err(_) => return,
            },
            None => &packet[..length],
        };
        // Never waits: a full socket buffer loses this frame, not the relay's time.
        let _ = self.pairs[Side::Caller.index()].rtp.try_send_to(packet, to);
    }

    /// Relays what one socket has queued; whether anything came.
    fn drain(&mut self, side: Side, channel: Channel, buffer: &mut [u8]) -> bool {
        let mut any = false;
        for _ in 0..BURST {
            let socket = match channel {
                Channel::Rtp => &self.pairs[side.index()].rtp,
                Channel::Rtcp => &self.pairs[side.index()].rtcp,
            };
            match socket.try_recv_from(buffer) {
                Ok((len, source)) => {
                    any = true;
                    self.relay(side, channel, &mut buffer[..len], source);
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors for earlier sends surface here on some systems: not fatal.
                Err(_) => continue,
            }
        }
        any
    }

    fn relay(&mut self, from: Side, channel: Channel, packet: &mut [u8], source: SocketAddr) {
        let leg = &mut self.legs[from.index()];
        let kind = match channel {
            Channel::Rtp => Kind::Rtp,
            Channel::Rtcp => Kind::Rtcp,
        };
        let (peer, latched) = match channel {
            Channel::Rtp => (leg.rtp_peer, leg.rtp_latched),
            Channel::Rtcp => (leg.rtcp_peer, leg.rtcp_latched),
        };
        if latched && peer != Some(source) {
            leg.foreign += 1;
            return;
        }
        let mut decrypted;
        let packet: &mut [u8] = match &mut leg.srtp {
            Some(srtp) => match srtp.unprotect(kind, packet) {
                Ok(plain) => {
                    decrypted = plain;
                    &mut decrypted[..]
                }
                Err(_) => {
                    // Before latching: a forged packet must not take the leg over.
                    leg.auth_failures += 1;
                    metrics::counter!("leadline_srtp_auth_failures_total").increment(1);
                    return;
                }
            },
            None => packet,
        };
        if !latched {
            let (peer, latched) = match channel {
                Channel::Rtp => (&mut leg.rtp_peer, &mut leg.rtp_latched),
                Channel::Rtcp => (&mut leg.rtcp_peer, &mut leg.rtcp_latched),
            };
            *peer = Some(source);
            *latched = true;
        }
        if channel == Channel::Rtp
            && let Ok(rtp) = rtp_rs::RtpReader::new(packet)
        {
            let arrival_us = self.started.elapsed().as_micros() as u64;
            let payload_type = rtp.payload_type();
            let clock_rate = leg
                .offer
                .as_ref()
                .map_or(8000, |o| o.clock_rate(payload_type));
            let sequence = u16::from(rtp.sequence_number());
            leg.stats.packet(
                sequence,
                rtp.timestamp(),
                rtp.ssrc(),
                clock_rate,
                arrival_us,
            );
            if let Some(tap) = &self.tap {
                let tapped = TappedPacket {
                    from,
                    payload_type,
                    sequence,
                    timestamp: rtp.timestamp(),
                    ssrc: rtp.ssrc(),
                    payload: rtp.payload().to_vec(),
                    arrival_samples: arrival_us * 8 / 1000,
                };
                if tap.try_send(tapped).is_err() {
                    metrics::counter!("leadline_recording_packets_dropped_total").increment(1);
                }
            }
        }
        if from == Side::Callee && self.player.is_some() {
            // The caller hears the music, not the agent's phone.
            return;
        }
        if from == Side::Callee && channel == Channel::Rtp && self.mark_callee && packet.len() > 1 {
            packet[1] |= 0x80;
            self.mark_callee = false;
        }
        let to = from.other();
        let out = &mut self.legs[to.index()];
        let (destination, socket) = match channel {
            Channel::Rtp => (out.rtp_peer, &self.pairs[to.index()].rtp),
            Channel::Rtcp => (out.rtcp_peer, &self.pairs[to.index()].rtcp),
        };
        let Some(destination) = destination else {
            return;
        };
        let encrypted;
        let packet: &[u8] = match &mut out.srtp {
            Some(srtp) => match srtp.protect(kind, packet) {
                Ok(p) => {
                    encrypted = p;
                    &encrypted[..]
                }
                // Not RTP (RTCP) that the transform can read: nothing to send in clear.
                Err(_) => return,
            },
            None => packet,
        };
        if socket.try_send_to(packet, destination).is_ok() {
            self.legs[from.index()].relayed += 1;
        }
    }

    fn publish(&self, timed_out: bool) {
        let direction = |leg: &LegState| DirectionStats {
            packets: leg.stats.received(),
            relayed: leg.relayed,
            lost: leg.stats.lost(),
            jitter_ms: (leg.stats.jitter_ms() * 100.0).round() / 100.0,
            foreign: leg.foreign,
            auth_failures: leg.auth_failures,
        };
        let stats = MediaStats {
            from_caller: direction(&self.legs[0]),
            from_callee: direction(&self.legs[1]),
            timed_out,
        };
        *self.shared.stats.lock().unwrap_or_else(|e| e.into_inner()) = stats;
    }
}

enum Wake {
    Command(Control),
    Readable(Side, Channel),
    Music(Result<Tick, broadcast::error::RecvError>),
    Tick,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::PortRange;
    use tokio::net::UdpSocket;

    fn engine(timeout: Duration) -> MediaEngine {
        // Port 0 ranges cannot be bound twice; find a free stretch.
        let range = loop {
            let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = probe.local_addr().unwrap().port();
            let first = port + port % 2;
            drop(probe);
            if first < 60_000
                && (first..first + 8).all(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok())
            {
                break PortRange {
                    first,
                    last: first + 7,
                };
            }
        };
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        MediaEngine::new(PortPool::new(range, ip), ip, timeout)
    }

    fn offer(port: u16) -> Vec<u8> {
        format!(
            "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        )
        .into_bytes()
    }

    fn rtp(seq: u16, payload_type: u8) -> Vec<u8> {
        rtp_rs::RtpPacketBuilder::new()
            .payload_type(payload_type)
            .ssrc(0x1234)
            .sequence(rtp_rs::Seq::from(seq))
            .timestamp(u32::from(seq) * 160)
            .payload(&[0xffu8; 160])
            .build()
            .unwrap()
    }

    async fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 2048];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("a packet within 5 s")
            .unwrap();
        buf.truncate(n);
        (buf, from)
    }

    #[tokio::test]
    async fn packets_flow_both_ways_from_the_gateway_ports() {
        let engine = engine(Duration::from_secs(60));
        let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let callee = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let session = engine.session().unwrap();
        let to_callee = session.sdp_from(Side::Caller, &offer(caller.local_addr().unwrap().port()));
        let relay_for_callee = sdp::audio(&to_callee).unwrap().rtp.unwrap();
        assert_eq!(relay_for_callee.port(), session.port(Side::Callee));
        let to_caller = session.sdp_from(Side::Callee, &offer(callee.local_addr().unwrap().port()));
        let relay_for_caller = sdp::audio(&to_caller).unwrap().rtp.unwrap();

        for seq in 0..10 {
            caller
                .send_to(&rtp(seq, 0), relay_for_caller)
                .await
                .unwrap();
            let (packet, source) = recv(&callee).await;
            assert_eq!(source, relay_for_callee, "the callee hears the gateway");
            assert_eq!(packet, rtp(seq, 0));
            callee
                .send_to(&rtp(seq, 0), relay_for_callee)
                .await
                .unwrap();
            let (_, source) = recv(&caller).await;
            assert_eq!(source, relay_for_caller);
        }
        // DTMF (RFC 4733) passes like any other payload.
        caller
            .send_to(&rtp(10, 101), relay_for_caller)
            .await
            .unwrap();
        assert_eq!(recv(&callee).await.0, rtp(10, 101));
        let stats = session.close().await;
        assert_eq!(stats.from_caller.packets, 11);
        assert_eq!(stats.from_caller.relayed, 11);
        assert_eq!(stats.from_callee.packets, 10);
        assert_eq!(stats.from_caller.lost, 0);
        assert_eq!(engine.pool().in_use(), 0, "ports released");
    }

    #[tokio::test]
    async fn a_party_behind_nat_is_latched_to_where_its_packets_come_from() {
        let engine = engine(Duration::from_secs(60));
        let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let nat = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let session = engine.session().unwrap();
        let to_callee = session.sdp_from(Side::Caller, &offer(caller.local_addr().unwrap().port()));
        let relay_for_callee = sdp::audio(&to_callee).unwrap().rtp.unwrap();
        // The callee's SDP names an address nobody listens on (its private address).
        let to_caller = session.sdp_from(Side::Callee, &offer(9));
        let relay_for_caller = sdp::audio(&to_caller).unwrap().rtp.unwrap();

        nat.send_to(&rtp(1, 0), relay_for_callee).await.unwrap();
        recv(&caller).await;
        caller.send_to(&rtp(1, 0), relay_for_caller).await.unwrap();
        let (_, source) = recv(&nat).await;
        assert_eq!(source, relay_for_callee, "sent back to the latched source");
        // Someone else sending to the port is not let in.
        stranger
            .send_to(&rtp(2, 0), relay_for_callee)
            .await
            .unwrap();
        nat.send_to(&rtp(3, 0), relay_for_callee).await.unwrap();
        let (packet, _) = recv(&caller).await;
        assert_eq!(packet, rtp(3, 0));
        let stats = session.close().await;
        assert_eq!(stats.from_callee.foreign, 1);
        assert_eq!(
            stats.from_callee.lost, 1,
            "sequence 2 never came from the callee"
        );
    }

    #[tokio::test]
    async fn rtcp_is_relayed_on_the_next_port() {
        let engine = engine(Duration::from_secs(60));
        let caller_rtcp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let callee_rtcp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let session = engine.session().unwrap();
        let with_rtcp = |port: u16| {
            let mut sdp = String::from_utf8(offer(4000)).unwrap();
            sdp.push_str(&format!("a=rtcp:{port}\r\n"));
            sdp.into_bytes()
        };
        let to_callee = session.sdp_from(
            Side::Caller,
            &with_rtcp(caller_rtcp.local_addr().unwrap().port()),
        );
        session.sdp_from(
            Side::Callee,
            &with_rtcp(callee_rtcp.local_addr().unwrap().port()),
        );
        let rtcp_for_callee = sdp::audio(&to_callee).unwrap().rtcp.unwrap();
        callee_rtcp
            .send_to(b"\x81\xc9\x00\x01rtcp", rtcp_for_callee)
            .await
            .unwrap();
        let (packet, source) = recv(&caller_rtcp).await;
        assert_eq!(packet, b"\x81\xc9\x00\x01rtcp");
        assert_eq!(source.port(), session.port(Side::Caller) + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_past_the_timeout_reports_the_call_dead() {
        let engine = engine(Duration::from_secs(3));
        let session = engine.session().unwrap();
        session.sdp_from(Side::Caller, &offer(4000));
        session.sdp_from(Side::Callee, &offer(4002));
        session.arm_timeout();
        tokio::time::timeout(Duration::from_secs(10), session.dead())
            .await
            .expect("reported dead");
        assert!(session.stats().timed_out);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_on_hold_is_not_dead() {
        let engine = engine(Duration::from_secs(3));
        let session = engine.session().unwrap();
        let held = String::from_utf8(offer(4000)).unwrap() + "a=inactive\r\n";
        session.sdp_from(Side::Caller, held.as_bytes());
        session.sdp_from(Side::Callee, &offer(4002));
        session.arm_timeout();
        assert!(
            tokio::time::timeout(Duration::from_secs(10), session.dead())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn audio_packets_reach_the_tap() {
        let engine = engine(Duration::from_secs(60));
        let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let session = engine.session().unwrap();
        session.sdp_from(Side::Caller, &offer(caller.local_addr().unwrap().port()));
        let to_caller = session.sdp_from(Side::Callee, &offer(4002));
        let (tap, mut tapped) = mpsc::channel(16);
        session.tap(tap);
        let relay_for_caller = sdp::audio(&to_caller).unwrap().rtp.unwrap();
        caller.send_to(&rtp(7, 0), relay_for_caller).await.unwrap();
        let packet = tokio::time::timeout(Duration::from_secs(5), tapped.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(packet.from, Side::Caller);
        assert_eq!(packet.sequence, 7);
        assert_eq!(packet.payload.len(), 160);
    }

    fn offer_with(port: u16, formats: &str, extra: &str) -> Vec<u8> {
        format!(
            "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP {formats}\r\n{extra}"
        )
        .into_bytes()
    }

    /// Music of one constant level, so every music frame is the same known payload.
    fn level(sample: i16) -> crate::media::greeting::Greeting {
        crate::media::greeting::Greeting::from_samples(vec![sample; 1_600]).unwrap()
    }

    struct Heard {
        marked: bool,
        payload_type: u8,
        sequence: u16,
        ssrc: u32,
        payload: Vec<u8>,
    }

    async fn hear(socket: &UdpSocket) -> (Heard, SocketAddr) {
        let (packet, from) = recv(socket).await;
        let rtp = rtp_rs::RtpReader::new(&packet).expect("an RTP packet");
        let heard = Heard {
            marked: rtp.mark(),
            payload_type: rtp.payload_type(),
            sequence: u16::from(rtp.sequence_number()),
            ssrc: rtp.ssrc(),
            payload: rtp.payload().to_vec(),
        };
        (heard, from)
    }

    #[tokio::test]
    async fn answer_caller_takes_the_callers_first_g711_and_its_dtmf() {
        let engine = engine(Duration::from_secs(60));
        let session = engine.session().unwrap();
        let offer = offer_with(
            4000,
            "18 8 0 101",
            "a=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        );
        let (answer, codec) = session.answer_caller(&offer).unwrap();
        assert_eq!(codec, Codec::Pcma, "PCMA is offered before PCMU");
        let text = String::from_utf8(answer.clone()).unwrap();
        assert!(text.contains("a=rtpmap:8 PCMA/8000\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        assert!(text.contains("o=leadline "), "{text}");
        let ours = sdp::audio(&answer).unwrap();
        assert_eq!(ours.payload_types, vec![8, 101]);
        assert_eq!(
            ours.rtp,
            Some(SocketAddr::new(
                engine.advertised(),
                session.port(Side::Caller)
            ))
        );
        let (answer, codec) = session.answer_caller(&offer_with(4000, "0", "")).unwrap();
        assert_eq!(codec, Codec::Pcmu);
        assert_eq!(sdp::audio(&answer).unwrap().payload_types, vec![0]);
        assert!(
            String::from_utf8(answer).unwrap().contains("o=leadline "),
            "the same origin, a later version"
        );
    }

    #[tokio::test]
    async fn answer_caller_refuses_an_offer_without_g711() {
        let engine = engine(Duration::from_secs(60));
        let session = engine.session().unwrap();
        let g729 = offer_with(4000, "18 101", "a=rtpmap:18 G729/8000\r\n");
        assert!(matches!(
            session.answer_caller(&g729),
            Err(MediaError::NoCodec)
        ));
        assert!(matches!(
            session.answer_caller(b"v=0\r\nm=video 5000 RTP/AVP 99\r\n"),
            Err(MediaError::NoCodec)
        ));
        assert!(matches!(
            session.answer_caller(b""),
            Err(MediaError::NoCodec)
        ));
    }

    #[tokio::test]
    async fn a_waiting_caller_who_sends_nothing_hears_continuous_music_at_its_sdp_address() {
        let engine = engine(Duration::from_secs(60));
        let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let session = engine.session().unwrap();
        let offer = offer_with(caller.local_addr().unwrap().port(), "8 0", "");
        let (_, codec) = session.answer_caller(&offer).unwrap();
        let music = Music::start(Some(level(2_000)));
        session.play(&music, codec, None);
        let (first, from) = hear(&caller).await;
        assert_eq!(
            from.port(),
            session.port(Side::Caller),
            "from the caller-facing port"
        );
        assert!(first.marked, "the first packet is marked");
        assert_eq!(first.payload_type, 8);
        assert_eq!(
            first.payload,
            vec![crate::media::g711::alaw_encode(2_000); 160]
        );
        let mut sequence = first.sequence;
        for _ in 0..20 {
            let (next, _) = hear(&caller).await;
            assert_eq!(next.sequence, sequence.wrapping_add(1), "no gap");
            assert_eq!(next.ssrc, first.ssrc);
            assert_eq!(next.payload_type, 8);
            assert!(!next.marked);
            sequence = next.sequence;
        }
        assert_eq!(music.listeners(), 1);
    }

    #[tokio::test]
    async fn the_position_is_beeped_before_the_music_and_again_when_it_changes() {
        let engine = engine(Duration::from_secs(60));
        let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let session = engine.session().unwrap();
        let offer = offer_with(caller.local_addr().unwrap().port(), "0", "");
        let (_, codec) = session.answer_caller(&offer).unwrap();
        let music = Music::start(Some(level(2_000)));
        let tune = vec![crate::media::g711::ulaw_encode(2_000); 160];
        session.play(&music, codec, Some(2));
        // Two beeps of 400 ms and a pause of 600 ms: 70 frames before the music.
        let mut before_music = Vec::new();
        let mut sequence = None;
        loop {
            let (heard, _) = hear(&caller).await;
            if let Some(sequence) = sequence {
                assert_eq!(heard.sequence, u16::wrapping_add(sequence, 1));
            }
            sequence = Some(heard.sequence);
            if heard.payload == tune {
                break;
            }
            before_music.push(heard.payload);
        }
        assert_eq!(before_music.len(), 70);
        let silent = |p: &Vec<u8>| p.iter().all(|&b| b == crate::media::g711::SILENCE_PCMU);
        assert!(!silent(&before_music[0]), "it starts with a beep");
        assert!(before_music[40..].iter().all(silent), "then a pause");
        session.announce(1);
        // After the announcement takes effect: one beep, the pause, the music again.
        let mut after = 0;
        loop {
            let (heard, _) = hear(&caller).await;
            if heard.payload != tune {
                after += 1;
            } else if after > 0 {
                break;
            }
        }
        assert_eq!(after, 50);
    }

    #[tokio::test]
    async fn stopping_the_music_lets_the_agent_through_with_a_marked_packet() {
        let engine = engine(Duration::from_secs(60));
        let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let agent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let session = engine.session().unwrap();
        let from_caller = offer_with(caller.local_addr().unwrap().port(), "0 8", "");
        let (_, codec) = session.answer_caller(&from_caller).unwrap();
        let music = Music::start(None);
        session.play(&music, codec, None);
        let (first, _) = hear(&caller).await;
        assert_eq!(first.payload_type, 0);
        // The agent is offered the caller's codec only and answers.
        let to_agent = session.sdp_from(
            Side::Caller,
            &sdp::only_codec(&from_caller, codec.payload_type()),
        );
        assert_eq!(sdp::audio(&to_agent).unwrap().payload_types, vec![0]);
        let relay_for_agent = sdp::audio(&to_agent).unwrap().rtp.unwrap();
        session.sdp_from(Side::Callee, &offer(agent.local_addr().unwrap().port()));
        // While the music plays the agent's audio does not reach the caller.
        agent.send_to(&rtp(1, 0), relay_for_agent).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while session.stats().from_callee.packets == 0 {
            assert!(Instant::now() < deadline, "the relay never took the packet");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        session.stop_playing();
        let deadline = Instant::now() + Duration::from_secs(5);
        while music.listeners() > 0 {
            assert!(Instant::now() < deadline, "the music did not stop");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        agent.send_to(&rtp(2, 0), relay_for_agent).await.unwrap();
        loop {
            let (heard, _) = hear(&caller).await;
            if heard.ssrc == first.ssrc {
                continue; // music sent before the stop
            }
            assert_eq!(
                heard.sequence, 2,
                "the agent's audio, not the one during the music"
            );
            assert!(heard.marked, "the new source starts with a marked packet");
            break;
        }
        agent.send_to(&rtp(3, 0), relay_for_agent).await.unwrap();
        let (next, _) = hear(&caller).await;
        assert_eq!((next.sequence, next.marked), (3, false));
        // And the caller reaches the agent.
        let relay_for_caller = SocketAddr::new(engine.advertised(), session.port(Side::Caller));
        caller.send_to(&rtp(9, 0), relay_for_caller).await.unwrap();
        assert_eq!(recv(&agent).await.0, rtp(9, 0));
    }

    #[tokio::test]
    async fn replacing_the_music_switches_every_waiting_caller() {
        let engine = engine(Duration::from_secs(60));
        let music = Music::start(Some(level(2_000)));
        let mut callers = Vec::new();
        for _ in 0..2 {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let session = engine.session().unwrap();
            let offer = offer_with(socket.local_addr().unwrap().port(), "0", "");
            let (_, codec) = session.answer_caller(&offer).unwrap();
            session.play(&music, codec, None);
            callers.push((socket, session));
        }
        let old = vec![crate::media::g711::ulaw_encode(2_000); 160];
        let new = vec![crate::media::g711::ulaw_encode(-6_000); 160];
        for (socket, _) in &callers {
            assert_eq!(hear(socket).await.0.payload, old);
        }
        music.replace(Some(level(-6_000)));
        for (socket, _) in &callers {
            let mut sequence = None;
            loop {
                let (heard, _) = hear(socket).await;
                if let Some(sequence) = sequence {
                    assert_eq!(heard.sequence, u16::wrapping_add(sequence, 1));
                }
                sequence = Some(heard.sequence);
                if heard.payload == new {
                    break;
                }
                assert_eq!(heard.payload, old);
            }
        }
    }

    #[tokio::test]
    async fn dropping_a_session_frees_its_ports() {
        let engine = engine(Duration::from_secs(60));
        let session = engine.session().unwrap();
        let port = session.port(Side::Caller);
        drop(session);
        let deadline = Instant::now() + Duration::from_secs(5);
        while engine.pool().in_use() > 0 && Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        assert_eq!(engine.pool().in_use(), 0);
        // The socket is closed once the aborted task is gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "port {port} still bound");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
