//! Per-address HTTP request limiting: a token bucket per client IP, sans-I/O (the caller
//! passes the time). Over the limit, a request gets 429 with the seconds to wait.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Addresses remembered before idle ones are forgotten.
const MAX_TRACKED: usize = 65_536;

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by client address.
pub struct HttpLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

impl HttpLimiter {
    /// `rate` requests a second sustained, `burst` at once, per address.
    pub fn new(rate: f64, burst: f64) -> Self {
        HttpLimiter {
            rate: rate.max(0.001),
            burst: burst.max(1.0),
            buckets: HashMap::new(),
        }
    }

    /// Takes one request from `ip`'s allowance at `now`: `Ok`, or `Err(seconds to wait)`.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&ip) {
            self.forget_full(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        b.tokens =
            (b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Forgets addresses whose buckets would be full by `now` (they are as if new).
    fn forget_full(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
        });
    }

    /// Addresses tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate_per_address() {
        let mut l = HttpLimiter::new(2.0, 3.0);
        let t = Instant::now();
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        for _ in 0..3 {
            assert_eq!(l.check(a, t), Ok(()));
        }
        assert_eq!(l.check(a, t), Err(1), "burst spent");
        assert_eq!(l.check(b, t), Ok(()), "another address has its own");
        assert_eq!(
            l.check(a, t + Duration::from_millis(500)),
            Ok(()),
            "2/s refills"
        );
        assert!(l.check(a, t + Duration::from_millis(500)).is_err());
        let mut slow = HttpLimiter::new(0.1, 1.0);
        slow.check(a, t).expect("first");
        assert_eq!(slow.check(a, t), Err(10), "wait ten seconds at 0.1/s");
    }

    #[test]
    fn idle_addresses_are_forgotten_when_many_are_tracked() {
        let mut l = HttpLimiter::new(100.0, 1.0);
        let t = Instant::now();
        for i in 0..MAX_TRACKED as u32 {
            l.check(IpAddr::from(i.to_be_bytes()), t)
                .expect("first request");
        }
        assert_eq!(l.tracked(), MAX_TRACKED);
        let later = t + Duration::from_secs(1);
        l.check(IpAddr::from([255, 255, 255, 255]), later)
            .expect("new address");
        assert_eq!(l.tracked(), 1, "the refilled ones were dropped");
    }
}
