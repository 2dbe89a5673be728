//! A token bucket for things vxtap generates in reaction to traffic (ICMP errors to an inner
//! host), so a flood of bad frames yields a bounded number of replies. Time comes from the
//! caller, in milliseconds: the bucket is pure and its tests need no clock.

use std::sync::Mutex;

/// Up to `burst` events at once, refilled at `per_sec` events per second. Shared by the
/// threads of a network behind a mutex: it is only consulted on cold paths.
pub struct TokenBucket {
    per_sec: u64,
    burst: u64,
    /// Tokens in thousandths, and the time they were counted at.
    state: Mutex<(u64, u64)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_sec: u64, burst: u64) -> TokenBucket {
        TokenBucket { per_sec, burst, state: Mutex::new((burst * 1000, 0)) }
    }

    /// Takes a token at time `now_ms` if one is left.
    pub fn allow(&self, now_ms: u64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (milli_tokens, last) = *s;
        let refill = now_ms.saturating_sub(last).saturating_mul(self.per_sec);
        let tokens = milli_tokens.saturating_add(refill).min(self.burst * 1000);
        let last = if now_ms > last { now_ms } else { last };
        if tokens >= 1000 {
            *s = (tokens - 1000, last);
            true
        } else {
            *s = (tokens, last);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_the_rate() {
        let b = TokenBucket::new(10, 5);
        let at0 = (0..20).filter(|_| b.allow(1000)).count();
        assert_eq!(at0, 5, "the burst");
        assert!(!b.allow(1050), "half a token after 50 ms");
        assert!(b.allow(1100), "one token after 100 ms at 10/s");
        assert!(!b.allow(1100));
        let later = (0..100).filter(|_| b.allow(60_000)).count();
        assert_eq!(later, 5, "never more than the burst, however long the pause");
    }

    #[test]
    fn a_flood_over_a_second_is_bounded() {
        let b = TokenBucket::new(100, 20);
        let allowed = (0..10_000u64).filter(|i| b.allow(i / 10)).count(); // 10 000 events in 1 s
        assert!((100..=120).contains(&allowed), "{allowed}");
    }

    #[test]
    fn time_going_backwards_gives_nothing_extra() {
        let b = TokenBucket::new(1, 1);
        assert!(b.allow(5000));
        assert!(!b.allow(4000));
        assert!(!b.allow(5500));
        assert!(b.allow(6000));
    }
}
