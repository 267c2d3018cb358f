//! The relay's cost per packet on an SRTP leg next to a plain one: what `RelayTask`
//! does with each packet besides the socket calls. Plain: read the RTP header and copy
//! the payload (statistics and the recorder's tap). SRTP adds the transform: decrypt and
//! authenticate what the party sends, encrypt and authenticate what goes to it.
//!
//! Run: `cargo bench --bench srtp` (release build); criterion prints the time per packet.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use leadline::media::sdes::MasterKey;
use leadline::media::srtp::{Kind, LegSrtp};

/// One 20 ms G.711 packet, as phones send them.
fn rtp(seq: u16) -> Vec<u8> {
    rtp_rs::RtpPacketBuilder::new()
        .payload_type(8)
        .ssrc(0x1234_5678)
        .sequence(rtp_rs::Seq::from(seq))
        .timestamp(u32::from(seq).wrapping_mul(160))
        .payload(&[0xd5u8; 160])
        .build()
        .expect("an RTP packet")
}

/// What the relay does with every packet anyway.
fn plain_work(packet: &[u8]) -> usize {
    let reader = rtp_rs::RtpReader::new(packet).expect("RTP");
    let copy = reader.payload().to_vec();
    usize::from(u16::from(reader.sequence_number())) + copy.len()
}

fn keys() -> (MasterKey, MasterKey) {
    (
        MasterKey::from_bytes([1; 30]),
        MasterKey::from_bytes([2; 30]),
    )
}

/// Packets decrypted in order by one context (its replay window refuses repeats), made
/// outside the timed part in chunks.
fn decrypt_per_packet(iters: u64, then_encrypt: bool) -> Duration {
    const CHUNK: u64 = 10_000;
    let (phone, relay) = keys();
    let mut sender = LegSrtp::new(relay.clone(), phone.clone()).expect("keys");
    let mut leg = LegSrtp::new(phone, relay).expect("keys");
    let mut seq = 0u16;
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        let wire: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                seq = seq.wrapping_add(1);
                sender.protect(Kind::Rtp, &rtp(seq)).expect("protect")
            })
            .collect();
        let start = Instant::now();
        for packet in &wire {
            let plain = leg.unprotect(Kind::Rtp, packet).expect("authentic");
            std::hint::black_box(plain_work(&plain));
            if then_encrypt {
                std::hint::black_box(leg.protect(Kind::Rtp, &plain).expect("protect"));
            }
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

fn relay_cost(c: &mut Criterion) {
    let packet = rtp(1);
    c.bench_function("plain RTP leg to plain leg, per packet", |b| {
        b.iter(|| plain_work(std::hint::black_box(&packet)))
    });
    let (phone, relay) = keys();
    let mut leg = LegSrtp::new(phone, relay).expect("keys");
    c.bench_function("plain leg to SRTP leg (encrypt), per packet", |b| {
        b.iter(|| {
            let packet = std::hint::black_box(&packet);
            plain_work(packet);
            leg.protect(Kind::Rtp, packet).expect("protect")
        })
    });
    c.bench_function("SRTP leg to plain leg (decrypt), per packet", |b| {
        b.iter_custom(|iters| decrypt_per_packet(iters, false))
    });
    c.bench_function(
        "SRTP leg to SRTP leg (decrypt and encrypt), per packet",
        |b| b.iter_custom(|iters| decrypt_per_packet(iters, true)),
    );
}

criterion_group!(benches, relay_cost);
criterion_main!(benches);
