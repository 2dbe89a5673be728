//! A network's per-packet policies that a reload may change while packets flow: the outer DF
//! bit, the TCP MSS clamp and the outer DSCP. They live in one atomic word, so the packet path
//! reads all three with one relaxed load and takes no lock.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::packet::dsfield::Tos;
use crate::packet::pmtu::{Df, MssClamp};

/// The policies, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policies {
    /// The outer IPv4 DF bit (`--df`).
    pub df: Df,
    /// `--mss-clamp`.
    pub mss_clamp: Option<MssClamp>,
    /// Where the outer DSCP comes from (`--tos`); the outer ECN field follows the inner packet.
    pub tos: Tos,
}

/// [`Policies`] in one atomic word: bits 0-1 the DF mode, bit 2 `tos inherit`, bits 3-10 a
/// fixed DS byte, bits 11-12 the clamp's kind and bits 13-28 its path MTU.
#[derive(Debug)]
pub(super) struct PolicyCell(AtomicU32);

impl PolicyCell {
    pub(super) fn new(p: Policies) -> PolicyCell {
        PolicyCell(AtomicU32::new(encode(p)))
    }

    #[inline]
    pub(super) fn load(&self) -> Policies {
        decode(self.0.load(Ordering::Relaxed))
    }

    pub(super) fn store(&self, p: Policies) {
        self.0.store(encode(p), Ordering::Relaxed);
    }
}

fn encode(p: Policies) -> u32 {
    let df = match p.df {
        Df::Set => 0,
        Df::Unset => 1,
        Df::Inherit => 2,
    };
    let tos = match p.tos {
        Tos::Fixed(b) => u32::from(b) << 3,
        Tos::Inherit => 1 << 2,
    };
    let mss = match p.mss_clamp {
        None => 0,
        Some(MssClamp::Auto) => 1 << 11,
        Some(MssClamp::PathMtu(m)) => 2 << 11 | u32::from(m) << 13,
    };
    df | tos | mss
}

#[inline]
fn decode(w: u32) -> Policies {
    let df = match w & 3 {
        0 => Df::Set,
        1 => Df::Unset,
        _ => Df::Inherit,
    };
    let tos = if w & 1 << 2 != 0 { Tos::Inherit } else { Tos::Fixed((w >> 3) as u8) };
    let mss_clamp = match w >> 11 & 3 {
        0 => None,
        1 => Some(MssClamp::Auto),
        _ => Some(MssClamp::PathMtu((w >> 13) as u16)),
    };
    Policies { df, mss_clamp, tos }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_combination_round_trips() {
        for df in [Df::Set, Df::Unset, Df::Inherit] {
            for mss_clamp in
                [None, Some(MssClamp::Auto), Some(MssClamp::PathMtu(576)), Some(MssClamp::PathMtu(65535))]
            {
                for tos in [Tos::Inherit, Tos::Fixed(0), Tos::Fixed(0xb8), Tos::Fixed(0xff)] {
                    let p = Policies { df, mss_clamp, tos };
                    let cell = PolicyCell::new(Policies::default());
                    cell.store(p);
                    assert_eq!(cell.load(), p);
                }
            }
        }
        assert_eq!(PolicyCell::new(Policies::default()).load(), Policies::default());
    }
}
