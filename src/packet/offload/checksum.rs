//! The Internet checksum (RFC 1071), as segmentation and coalescing need it: partial sums that
//! can be added together, pseudo-headers, and folding.
//!
//! Sums are accumulated over native-endian words (one's complement addition is byte-order
//! independent up to a final swap, RFC 1071 §2(B)), in parallel lanes: with AVX2 where the CPU
//! has it (chosen at run time, ~55 GiB/s on this project's VM), else in a portable loop the
//! compiler vectorizes (~16–23 GiB/s; `cargo bench --bench offload`). Every partial sum but the
//! last must cover an even number of bytes.

/// 32-bit words summed side by side in [`Sum::add_bytes`], the bytes they take per step, and
/// the shortest data worth the lanes' final fold.
const LANES: usize = 16;
const BLOCK: usize = LANES * 4;
const LANE_MIN: usize = 256;

/// A one's complement sum in progress, in native word order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sum(u64);

impl Sum {
    pub const ZERO: Sum = Sum(0);

    /// Adds `data`; an odd trailing byte counts as the high byte of a zero-padded word.
    #[inline]
    pub fn add_bytes(self, data: &[u8]) -> Sum {
        self.add_bytes_with(data, simd::sum_blocks)
    }

    /// [`Sum::add_bytes`] with `blocks` summing the whole 64-byte blocks of long data.
    #[inline(always)]
    fn add_bytes_with(self, data: &[u8], blocks: BlockSum) -> Sum {
        if data.len() < LANE_MIN {
            return self.add_words(data);
        }
        let whole = data.len() / BLOCK * BLOCK;
        self.combine(blocks(&data[..whole])).add_words(&data[whole..])
    }

    /// The serial path for short data: 64-bit words with end-around carry.
    #[inline]
    fn add_words(self, data: &[u8]) -> Sum {
        let mut acc = self.0;
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
            let (s, carry) = acc.overflowing_add(w);
            acc = s + u64::from(carry);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut tail = [0u8; 8];
            tail[..rest.len()].copy_from_slice(rest);
            let (s, carry) = acc.overflowing_add(u64::from_ne_bytes(tail));
            acc = s + u64::from(carry);
        }
        Sum(acc)
    }

    /// Adds a 16-bit value given in host order (a length, a protocol number).
    #[inline]
    pub fn add_u16(self, v: u16) -> Sum {
        self.add_bytes(&v.to_be_bytes())
    }

    /// Adds another partial sum (of an even-length block).
    #[inline]
    pub fn combine(self, other: Sum) -> Sum {
        let (s, carry) = self.0.overflowing_add(other.0);
        Sum(s + u64::from(carry))
    }

    /// The sum folded to 16 bits, as a host-order number (not complemented).
    #[inline]
    pub fn fold(self) -> u16 {
        let mut s = self.0;
        s = (s & 0xffff_ffff) + (s >> 32);
        s = (s & 0xffff_ffff) + (s >> 32);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        u16::from_be(s as u16)
    }

    /// The checksum to store: the complemented fold, with 0 sent as 0xffff (the same value in
    /// one's complement, and the only form UDP accepts, as the kernel's CSUM_MANGLED_0).
    #[inline]
    pub fn finish(self) -> [u8; 2] {
        match !self.fold() {
            0 => [0xff, 0xff],
            c => c.to_be_bytes(),
        }
    }

    /// True when data that includes its own checksum field sums to all ones.
    #[inline]
    pub fn verifies(self) -> bool {
        self.fold() == 0xffff
    }
}

/// The sum of `data`, a whole number of [`BLOCK`]s, in [`LANES`] lanes: 32-bit words summed in
/// 64-bit lanes do not overflow (a lane would need 2^32 of its words: 256 GiB of data), so no
/// carry links one word to the next and the loop becomes vector adds. The lanes fold at the end.
#[inline]
fn sum_blocks_portable(data: &[u8]) -> Sum {
    let mut lanes = [0u64; LANES];
    for block in data.chunks_exact(BLOCK) {
        for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(4)) {
            *lane += u64::from(u32::from_ne_bytes(word.try_into().expect("4 bytes")));
        }
    }
    fold_lanes(&lanes)
}

/// The sum of 64-bit lanes, each a sum of 32-bit words.
#[inline]
fn fold_lanes(lanes: &[u64]) -> Sum {
    lanes.iter().fold(Sum::ZERO, |a, &l| a.combine(Sum(l)))
}

/// The lane loop with x86 vector instructions, chosen at run time. Each 64-bit lane of a
/// vector register adds the low and the high 32-bit halves of its loaded word to two
/// accumulators (a mask and a shift), which keeps every vector port busy: the zero-extending
/// loads the compiler makes of the portable loop with AVX2 enabled all queue on one shuffle
/// port (~40 GiB/s against ~55). AVX-512 measured ~5 % faster still: not worth a third variant.
#[allow(unsafe_code)]
mod simd {
    use super::{fold_lanes, sum_blocks_portable, BlockSum, Sum, BLOCK};
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// [`super::sum_blocks_portable`] with the widest vector instructions worth using here.
    #[inline]
    pub(super) fn sum_blocks(data: &[u8]) -> Sum {
        debug_assert_eq!(data.len() % BLOCK, 0, "whole blocks only");
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above, the only requirement of `avx2`.
            return unsafe { avx2(data) };
        }
        sum_blocks_portable(data)
    }

    /// 64 bytes per step in two 256-bit registers, four accumulators.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn avx2(data: &[u8]) -> Sum {
        let low = _mm256_set1_epi64x(0xffff_ffff);
        let mut acc = [_mm256_setzero_si256(); 4];
        for block in data.chunks_exact(BLOCK) {
            // SAFETY: `block` is 64 readable bytes, and unaligned loads take any address: the
            // two loads read bytes 0..32 and 32..64.
            let (v0, v1) = unsafe {
                let p = block.as_ptr().cast::<__m256i>();
                (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1)))
            };
            acc[0] = _mm256_add_epi64(acc[0], _mm256_and_si256(v0, low));
            acc[1] = _mm256_add_epi64(acc[1], _mm256_srli_epi64::<32>(v0));
            acc[2] = _mm256_add_epi64(acc[2], _mm256_and_si256(v1, low));
            acc[3] = _mm256_add_epi64(acc[3], _mm256_srli_epi64::<32>(v1));
        }
        let mut lanes = [0u64; 16];
        for (chunk, a) in lanes.chunks_exact_mut(4).zip(acc) {
            // SAFETY: `chunk` is 4 writable u64s, 32 bytes; unaligned stores take any address.
            unsafe { _mm256_storeu_si256(chunk.as_mut_ptr().cast(), a) };
        }
        fold_lanes(&lanes)
    }

    /// Every variant this CPU can run, by name, for the tests and the benchmark.
    pub(super) fn variants() -> Vec<(&'static str, BlockSum)> {
        let mut v: Vec<(&'static str, BlockSum)> = vec![("portable", sum_blocks_portable)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: listed only when the CPU supports AVX2.
                v.push(("avx2", |d| unsafe { avx2(d) }));
            }
        }
        v
    }
}

/// One implementation of the lane loop: the sum of a whole number of 64-byte blocks.
pub type BlockSum = fn(&[u8]) -> Sum;

/// The lane loop's implementations this CPU can run, by name ("portable", "avx2"):
/// each sums a whole number of 64-byte blocks. For the tests and `cargo bench --bench offload`;
/// [`Sum::add_bytes`] picks one.
pub fn block_variants() -> Vec<(&'static str, BlockSum)> {
    simd::variants()
}

/// The IPv4 pseudo-header of a transport segment of `len` bytes (RFC 793 §3.1).
#[inline]
pub fn pseudo_v4(src: &[u8], dst: &[u8], proto: u8, len: u16) -> Sum {
    Sum::ZERO.add_bytes(src).add_bytes(dst).add_bytes(&[0, proto]).add_u16(len)
}

/// The IPv6 pseudo-header (RFC 8200 §8.1).
#[inline]
pub fn pseudo_v6(src: &[u8], dst: &[u8], proto: u8, len: u32) -> Sum {
    Sum::ZERO.add_bytes(src).add_bytes(dst).add_bytes(&len.to_be_bytes()).add_bytes(&[0, 0, 0, proto])
}

/// Completes a partial checksum the way the kernel does for CHECKSUM_PARTIAL: sums everything
/// from `start` (whose checksum field at `start + offset` already holds the pseudo-header sum)
/// and stores the result there. False when the offsets do not fit the frame.
pub fn complete(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let field = start + offset;
    if start >= frame.len() || field + 2 > frame.len() {
        return false;
    }
    let sum = Sum::ZERO.add_bytes(&frame[start..]);
    frame[field..field + 2].copy_from_slice(&sum.finish());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip::protocol;
    use crate::wire::udp;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// RFC 1071's reference algorithm, big-endian 16-bit words, for comparison.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn matches_the_reference_for_every_length_and_split() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7919 % 251) as u8).collect();
        for len in 0..data.len() {
            assert_eq!(Sum::ZERO.add_bytes(&data[..len]).fold(), reference(&data[..len]), "len {len}");
        }
        for split in (0..200).step_by(2) {
            let joined = Sum::ZERO.add_bytes(&data[..split]).combine(Sum::ZERO.add_bytes(&data[split..]));
            assert_eq!(joined.fold(), reference(&data), "split {split}");
        }
        let ones = [0xffu8; 64];
        assert_eq!(Sum::ZERO.add_bytes(&ones).fold(), 0xffff, "carries wrap around");
    }

    #[test]
    fn long_data_matches_the_reference() {
        // Past the lane loop's block size, with every tail length and odd starting alignments.
        let data: Vec<u8> = (0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for (start, len) in [(0, 65_536), (1, 65_535), (3, 1_398), (5, 64), (7, 127), (0, 69_999)] {
            let d = &data[start..start + len];
            assert_eq!(Sum::ZERO.add_bytes(d).fold(), reference(d), "start {start} len {len}");
        }
        let ones = vec![0xffu8; 65_536];
        assert_eq!(Sum::ZERO.add_bytes(&ones).fold(), 0xffff, "lanes full of carries");
        let s = Sum::ZERO.add_bytes(&[0x12, 0x34]).add_bytes(&data[..4096]);
        assert_eq!(s.fold(), reference(&[&[0x12, 0x34][..], &data[..4096]].concat()), "sum carried in");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(debug_assertions) { 500 } else { 5_000 }))]

        /// Every implementation of the lane loop, inside `add_bytes` and alone, on any length
        /// (odd ones too) from any starting alignment, with any sum carried in.
        #[test]
        fn every_implementation_matches_the_reference(
            data in vec(any::<u8>(), 0..5000),
            start in 0usize..64,
            carried in any::<[u8; 2]>(),
        ) {
            let d = &data[start.min(data.len())..];
            let expected = reference(&[&carried[..], d].concat());
            let whole = d.len() / BLOCK * BLOCK;
            for (name, blocks) in block_variants() {
                let s = Sum::ZERO.add_bytes(&carried).add_bytes_with(d, blocks);
                prop_assert_eq!(s.fold(), expected, "{} in add_bytes", name);
                prop_assert_eq!(blocks(&d[..whole]).fold(), reference(&d[..whole]), "{} alone", name);
            }
            prop_assert_eq!(Sum::ZERO.add_bytes(&carried).add_bytes(d).fold(), expected, "add_bytes");
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Lanes full of carries: all-ones data of any length up to 64 KB and a bit more.
        #[test]
        fn every_implementation_folds_carries(len in 0usize..65_600, start in 0usize..64) {
            let data = vec![0xffu8; len + 64];
            let d = &data[start..start + len];
            for (name, blocks) in block_variants() {
                let s = Sum::ZERO.add_bytes_with(d, blocks);
                prop_assert_eq!(s.fold(), reference(d), "{}", name);
            }
        }
    }

    #[test]
    fn this_cpu_runs_the_vector_variant_it_has() {
        let names: Vec<_> = block_variants().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names[0], "portable");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(names.contains(&"avx2"), std::arch::is_x86_feature_detected!("avx2"));
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let s = Sum::ZERO.add_bytes(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
        assert_eq!(s.fold(), 0xddf2);
        assert_eq!(s.finish(), [0x22, 0x0d]);
    }

    #[test]
    fn complete_fills_a_udp_checksum_that_verifies() {
        // An IPv4 UDP datagram 198.18.0.1 -> 198.18.0.2 with the pseudo-header sum in place.
        let (src, dst) = ([198, 18, 0, 1], [198, 18, 0, 2]);
        let mut dgram = vec![0x30, 0x39, 0x12, 0xb5, 0, 12, 0, 0, b'a', b'b', b'c', b'd'];
        let pseudo = pseudo_v4(&src, &dst, protocol::UDP, 12);
        dgram[udp::field::CHECKSUM].copy_from_slice(&pseudo.fold().to_be_bytes());
        assert!(complete(&mut dgram, 0, udp::field::CHECKSUM.start));
        assert!(pseudo.add_bytes(&dgram).verifies());
        assert!(!complete(&mut dgram, 0, 11), "field past the end");
        assert!(!complete(&mut dgram, 12, 0), "start past the end");
    }
}
