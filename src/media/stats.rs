//! Receive statistics of one RTP stream, as RFC 3550 computes them for reception reports:
//! packets lost from the extended sequence number (appendix A.3) and the interarrival
//! jitter estimate (§6.4.1, appendix A.8). Pure: arrival times come in as arguments.

/// One direction of a call's audio, as the gateway receives it.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    ssrc: Option<u32>,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u64,
    /// Received in earlier SSRCs of this direction (a transfer or re-INVITE changes it).
    earlier_received: u64,
    earlier_expected: u64,
    /// Last packet's relative transit time, in RTP clock units.
    last_transit: Option<i64>,
    /// Jitter in RTP clock units, scaled by 16 as in RFC 3550 A.8 to keep precision.
    jitter_x16: u64,
    clock_rate: u32,
}

/// A gap larger than this is a restarted stream, not loss (RFC 3550 A.1 `MAX_DROPOUT`).
const MAX_DROPOUT: u16 = 3000;
const RTP_SEQ_MOD: u32 = 1 << 16;

impl StreamStats {
    /// Takes one packet: its sequence number, RTP timestamp and SSRC, its clock rate, and
    /// when it arrived (microseconds on any monotonic clock).
    pub fn packet(
        &mut self,
        sequence: u16,
        timestamp: u32,
        ssrc: u32,
        clock_rate: u32,
        arrival_us: u64,
    ) {
        if self.ssrc != Some(ssrc) {
            self.earlier_expected += self.expected();
            self.earlier_received += self.received;
            self.ssrc = Some(ssrc);
            self.base_seq = u32::from(sequence);
            self.max_seq = sequence;
            self.cycles = 0;
            self.received = 0;
            self.last_transit = None;
        } else {
            let delta = sequence.wrapping_sub(self.max_seq);
            if delta != 0 && delta < MAX_DROPOUT {
                if sequence < self.max_seq {
                    self.cycles += RTP_SEQ_MOD;
                }
                self.max_seq = sequence;
            } else if (MAX_DROPOUT..=u16::MAX - 100).contains(&delta) {
                // A jump far ahead or behind: the sender restarted its sequence.
                self.earlier_expected += self.expected();
                self.earlier_received += self.received;
                self.base_seq = u32::from(sequence);
                self.max_seq = sequence;
                self.cycles = 0;
                self.received = 0;
            }
            // Otherwise a duplicate or a reordered packet: counted, sequence kept.
        }
        self.received += 1;

        let clock_rate = clock_rate.max(1);
        self.clock_rate = clock_rate;
        let arrival = (u128::from(arrival_us) * u128::from(clock_rate) / 1_000_000) as i64;
        let transit = arrival.wrapping_sub(i64::from(timestamp));
        if let Some(last) = self.last_transit {
            let d = transit.wrapping_sub(last).unsigned_abs();
            // J += (|D| - J) / 16, kept ×16 (RFC 3550 A.8).
            self.jitter_x16 = self.jitter_x16 + d - (self.jitter_x16 + 8) / 16;
        }
        self.last_transit = Some(transit);
    }

    fn expected(&self) -> u64 {
        if self.ssrc.is_none() {
            return 0;
        }
        let extended_max = u64::from(self.cycles) + u64::from(self.max_seq);
        extended_max + 1 - u64::from(self.base_seq)
    }

    /// Packets received.
    pub fn received(&self) -> u64 {
        self.earlier_received + self.received
    }

    /// Packets the sequence numbers say were sent and never arrived (never negative:
    /// duplicates do not make up for losses elsewhere in this report).
    pub fn lost(&self) -> u64 {
        let expected = self.earlier_expected + self.expected();
        expected.saturating_sub(self.received())
    }

    /// The interarrival jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        if self.clock_rate == 0 {
            return 0.0;
        }
        (self.jitter_x16 as f64 / 16.0) * 1000.0 / f64::from(self.clock_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 50 packets/s G.711 stream: sequence, timestamp, arrival.
    fn steady(stats: &mut StreamStats, seqs: impl IntoIterator<Item = u16>, jitter_us: u64) {
        for (i, seq) in seqs.into_iter().enumerate() {
            let wobble = if i % 2 == 0 { 0 } else { jitter_us };
            let n = u64::from(seq);
            stats.packet(seq, (n * 160) as u32, 7, 8000, n * 20_000 + wobble);
        }
    }

    #[test]
    fn a_clean_stream_has_no_loss_and_no_jitter() {
        let mut stats = StreamStats::default();
        steady(&mut stats, 0..500, 0);
        assert_eq!(stats.received(), 500);
        assert_eq!(stats.lost(), 0);
        assert!(stats.jitter_ms() < 0.01);
    }

    #[test]
    fn missing_sequence_numbers_are_lost() {
        let mut stats = StreamStats::default();
        steady(&mut stats, (0..100).filter(|s| s % 10 != 3), 0);
        assert_eq!(stats.lost(), 10);
    }

    #[test]
    fn the_sequence_wraps_without_counting_loss() {
        let mut stats = StreamStats::default();
        for i in 0..200u32 {
            let seq = (65_500 + i) as u16;
            stats.packet(seq, i * 160, 1, 8000, u64::from(i) * 20_000);
        }
        assert_eq!(stats.received(), 200);
        assert_eq!(stats.lost(), 0);
    }

    #[test]
    fn jitter_converges_to_the_arrival_wobble() {
        let mut stats = StreamStats::default();
        // Every other packet 2 ms late: |D| is 2 ms for every packet.
        steady(&mut stats, 0..2000, 2000);
        let jitter = stats.jitter_ms();
        assert!((1.8..=2.1).contains(&jitter), "{jitter}");
    }

    #[test]
    fn a_new_ssrc_starts_a_new_count_and_keeps_the_old() {
        let mut stats = StreamStats::default();
        steady(&mut stats, 0..50, 0);
        for i in 0..50u16 {
            if i == 20 {
                continue;
            }
            stats.packet(
                9000 + i,
                u32::from(i) * 160,
                99,
                8000,
                2_000_000 + u64::from(i) * 20_000,
            );
        }
        assert_eq!(stats.received(), 99);
        assert_eq!(stats.lost(), 1);
    }

    #[test]
    fn reordered_and_duplicate_packets_are_not_loss() {
        let mut stats = StreamStats::default();
        for (i, seq) in [0u16, 1, 3, 2, 4, 4, 5].into_iter().enumerate() {
            stats.packet(seq, u32::from(seq) * 160, 1, 8000, i as u64 * 20_000);
        }
        assert_eq!(stats.lost(), 0);
    }
}
