//! The RTP port range: pairs of UDP sockets (RTP on an even port, RTCP on the next one,
//! RFC 3550 §11) handed out to calls and given back when the pair is dropped.
//!
//! Released pairs go to the back of the queue: a port is reused as late as possible, so
//! stray packets of an ended call do not reach the next call on the same port.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use super::MediaError;

/// An inclusive range of UDP ports, such as `20000-30000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (first, last) = s
            .split_once('-')
            .ok_or_else(|| format!("'{s}' is not a port range such as 20000-30000"))?;
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("'{p}' in '{s}' is not a port number (1024-65535)"))
        };
        let (first, last) = (parse(first)?, parse(last)?);
        if first < 1024 {
            return Err(format!(
                "'{s}' starts below 1024: pick unprivileged ports such as 20000-30000"
            ));
        }
        // One pair needs an even port and the odd one after it.
        let first_even = first + first % 2;
        if last <= first_even {
            return Err(format!(
                "'{s}' holds no RTP/RTCP pair: give at least two ports starting at an even one"
            ));
        }
        Ok(PortRange { first, last })
    }
}

impl PortRange {
    /// The even ports that start a pair.
    fn pair_bases(self) -> impl Iterator<Item = u16> {
        let first = self.first + self.first % 2;
        (first..self.last).step_by(2)
    }

    /// How many RTP/RTCP pairs the range holds.
    pub fn pairs(self) -> usize {
        self.pair_bases().count()
    }
}

struct PoolState {
    free: VecDeque<u16>,
    in_use: usize,
}

/// The range's pairs, shared by every call of the process.
#[derive(Clone)]
pub struct PortPool {
    range: PortRange,
    bind: IpAddr,
    state: Arc<Mutex<PoolState>>,
}

impl PortPool {
    /// Sockets are bound on `bind` (`0.0.0.0` for all interfaces).
    pub fn new(range: PortRange, bind: IpAddr) -> Self {
        let free: VecDeque<u16> = range.pair_bases().collect();
        Self {
            range,
            bind,
            state: Arc::new(Mutex::new(PoolState { free, in_use: 0 })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds the next free pair. A pair some other program holds is skipped (and tried
    /// again later), so the range may be shared with other software, at a cost in calls.
    pub fn allocate(&self) -> Result<PortPair, MediaError> {
        let attempts = self.lock().free.len();
        for _ in 0..attempts {
            let Some(base) = self.lock().free.pop_front() else {
                break;
            };
            match bind_pair(self.bind, base) {
                Ok((rtp, rtcp)) => {
                    let in_use = {
                        let mut state = self.lock();
                        state.in_use += 1;
                        state.in_use
                    };
                    metrics::gauge!("leadline_rtp_port_pairs_in_use").set(in_use as f64);
                    return Ok(PortPair {
                        rtp,
                        rtcp,
                        port: base,
                        pool: self.clone(),
                    });
                }
                Err(err) => {
                    tracing::debug!(port = base, %err, "RTP port pair taken by someone else");
                    self.lock().free.push_back(base);
                }
            }
        }
        metrics::counter!("leadline_rtp_ports_exhausted_total").increment(1);
        Err(MediaError::PortsExhausted(self.range))
    }

    /// Pairs handed out and not yet given back.
    pub fn in_use(&self) -> usize {
        self.lock().in_use
    }

    /// Pairs the range holds.
    pub fn capacity(&self) -> usize {
        self.range.pairs()
    }

    pub fn range(&self) -> PortRange {
        self.range
    }

    fn release(&self, base: u16) {
        let in_use = {
            let mut state = self.lock();
            state.in_use = state.in_use.saturating_sub(1);
            state.free.push_back(base);
            state.in_use
        };
        metrics::gauge!("leadline_rtp_port_pairs_in_use").set(in_use as f64);
    }
}

fn bind_pair(
    ip: IpAddr,
    base: u16,
) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::UdpSocket)> {
    let bind = |port: u16| -> std::io::Result<tokio::net::UdpSocket> {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, port))?;
        socket.set_nonblocking(true)?;
        tokio::net::UdpSocket::from_std(socket)
    };
    let rtp = bind(base)?;
    let rtcp = bind(base + 1)?;
    Ok((rtp, rtcp))
}

/// An RTP socket and its RTCP socket; the ports go back to the pool when it is dropped.
pub struct PortPair {
    pub rtp: tokio::net::UdpSocket,
    pub rtcp: tokio::net::UdpSocket,
    port: u16,
    pool: PortPool,
}

impl PortPair {
    /// The RTP port (RTCP is the next one).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl std::fmt::Debug for PortPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortPair")
            .field("port", &self.port)
            .finish()
    }
}

impl Drop for PortPair {
    fn drop(&mut self) {
        // The sockets close right after this (fields drop after `drop`); the port goes to
        // the back of the queue, so it is not bound again before that.
        self.pool.release(self.port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_name_their_problem() {
        let range: PortRange = "20000-30000".parse().unwrap();
        assert_eq!(range.pairs(), 5000);
        let odd: PortRange = "20001-20005".parse().unwrap();
        assert_eq!(odd.pair_bases().collect::<Vec<_>>(), vec![20002, 20004]);
        assert!(
            "20000"
                .parse::<PortRange>()
                .unwrap_err()
                .contains("20000-30000")
        );
        assert!("80-90".parse::<PortRange>().unwrap_err().contains("1024"));
        assert!(
            "20001-20002"
                .parse::<PortRange>()
                .unwrap_err()
                .contains("pair")
        );
        assert!("20000-x".parse::<PortRange>().is_err());
    }

    /// A free port range of `pairs` pairs on loopback, found by binding.
    fn free_range(pairs: u16) -> PortRange {
        for _ in 0..200 {
            let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = probe.local_addr().unwrap().port();
            let first = port + port % 2;
            if first.checked_add(2 * pairs).is_none() {
                continue;
            }
            drop(probe);
            let all_free = (first..first + 2 * pairs)
                .all(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok());
            if all_free {
                return PortRange {
                    first,
                    last: first + 2 * pairs - 1,
                };
            }
        }
        panic!("no free port range");
    }

    #[tokio::test]
    async fn pairs_are_handed_out_and_come_back_when_dropped() {
        let range = free_range(3);
        let pool = PortPool::new(range, "127.0.0.1".parse().unwrap());
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!(a.port() % 2, 0);
        assert_eq!(a.rtcp.local_addr().unwrap().port(), a.port() + 1);
        assert_ne!(a.port(), b.port());
        assert_eq!(pool.in_use(), 2);
        let c = pool.allocate().unwrap();
        assert!(matches!(
            pool.allocate(),
            Err(MediaError::PortsExhausted(r)) if r == range
        ));
        let a_port = a.port();
        drop(a);
        assert_eq!(pool.in_use(), 2);
        // The released pair is the only free one, and it binds again.
        let again = pool.allocate().unwrap();
        assert_eq!(again.port(), a_port);
        drop((b, c, again));
        assert_eq!(pool.in_use(), 0);
    }

    #[tokio::test]
    async fn a_pair_held_by_another_program_is_skipped() {
        let range = free_range(2);
        let squatter = std::net::UdpSocket::bind(("127.0.0.1", range.first + 1)).unwrap();
        let pool = PortPool::new(range, "127.0.0.1".parse().unwrap());
        let pair = pool.allocate().unwrap();
        assert_eq!(pair.port(), range.first + 2);
        assert!(pool.allocate().is_err());
        drop(squatter);
        assert_eq!(pool.allocate().unwrap().port(), range.first);
    }
}
