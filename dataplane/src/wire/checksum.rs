//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624, eqn. 3), used when
//! actions rewrite addresses, ports, TTL or DSCP.

/// One's-complement sum of `data` folded to 16 bits (not inverted).
pub fn sum(data: &[u8]) -> u16 {
    // 32-bit big-endian words add up to the same folded sum as 16-bit ones (2^16 is 1 modulo
    // 2^16 - 1), at half the additions; a u64 cannot overflow below 2^32 words.
    let mut words = data.chunks_exact(4);
    let mut s: u64 = words.by_ref().map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as u64).sum();
    for c in words.remainder().chunks(2) {
        s += if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) as u64 } else { (c[0] as u64) << 8 };
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Fills in the checksum a sender left to be completed (Linux's CHECKSUM_PARTIAL, as a
/// veth with tx checksum offload hands frames on): the field at `start + offset` already
/// holds the pseudo-header's sum, so the checksum is that of `data[start..]`. A result of
/// 0 is sent as 0xffff, as the kernel does (0 means "no checksum" to UDP). False, changing
/// nothing, if the field lies outside `data`.
pub fn complete_partial(data: &mut [u8], start: usize, offset: usize) -> bool {
    let Some(field) = start.checked_add(offset).filter(|f| f + 2 <= data.len()) else { return false };
    let check = match checksum(&data[start..]) {
        0 => 0xffff,
        c => c,
    };
    data[field..field + 2].copy_from_slice(&check.to_be_bytes());
    true
}

/// The checksum of `data` (inverted sum).
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// The checksum after one 16-bit word of the covered data changes from `old` to `new`:
/// HC' = ~(~HC + ~m + m').
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let mut s = (!check as u32) + (!old as u32 & 0xffff) + new as u32;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// [`update16`] for a 32-bit field (two words).
#[inline]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let c = update16(check, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 header with a valid checksum (from RFC 1071 examples / a real capture).
    const IP: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
        0x00, 0xc7,
    ];

    #[test]
    fn verifies_a_real_header() {
        assert_eq!(checksum(&IP), 0, "a header with its checksum sums to all ones");
        let mut h = IP;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xb861);
    }

    /// The sum as RFC 1071 states it: 16-bit words, an odd byte padded with zero.
    fn sum_by_16_bit_words(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            s += if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) as u32 } else { (c[0] as u32) << 8 };
        }
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn sum_by_32_bit_words_equals_rfc_1071_sum() {
        // Every length up to 70 (each remainder of 4, odd ones too), all-ones data (the
        // most carries) and a pattern; then a jumbo frame's worth.
        let pattern: Vec<u8> = (0..9000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let ones = vec![0xffu8; 9000];
        for len in (0..=70).chain([1499, 1500, 9000]) {
            assert_eq!(sum(&pattern[..len]), sum_by_16_bit_words(&pattern[..len]), "pattern, {len} bytes");
            assert_eq!(sum(&ones[..len]), sum_by_16_bit_words(&ones[..len]), "all ones, {len} bytes");
        }
    }

    #[test]
    fn completes_a_partial_udp_checksum() {
        // IPv4 UDP 10.0.0.1:1000 -> 10.0.0.2:2000, 4 payload bytes, as a sender with checksum
        // offload leaves it: the checksum field holds the pseudo-header's sum, not inverted.
        let (src, dst) = ([10u8, 0, 0, 1], [10u8, 0, 0, 2]);
        let mut udp = vec![0x03, 0xe8, 0x07, 0xd0, 0x00, 0x0c, 0, 0, b'a', b'b', b'c', b'd'];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src);
        pseudo.extend_from_slice(&dst);
        pseudo.extend_from_slice(&[0, 17, 0, 12]);
        let full = {
            let mut all = pseudo.clone();
            all.extend_from_slice(&udp);
            checksum(&all)
        };
        udp[6..8].copy_from_slice(&sum(&pseudo).to_be_bytes());
        let mut frame = vec![0u8; 34];
        frame.extend_from_slice(&udp);
        assert!(complete_partial(&mut frame, 34, 6));
        assert_eq!(u16::from_be_bytes([frame[40], frame[41]]), full, "what a sender without offload puts there");
        let mut with_pseudo = pseudo.clone();
        with_pseudo.extend_from_slice(&frame[34..]);
        assert_eq!(checksum(&with_pseudo), 0, "the completed datagram verifies");
        // A field past the end is refused and nothing changes.
        let before = frame.clone();
        assert!(!complete_partial(&mut frame, 34, 11));
        assert!(!complete_partial(&mut frame, usize::MAX, 6));
        assert_eq!(frame, before);
    }

    #[test]
    fn a_zero_checksum_is_sent_as_all_ones() {
        // Data whose sum is 0xffff, so the inverted sum is 0: sent as 0xffff.
        let mut data = vec![0xff, 0xff, 0x00, 0x00];
        assert!(complete_partial(&mut data, 0, 2));
        assert_eq!(&data[2..], &[0xff, 0xff]);
    }

    #[test]
    fn incremental_equals_recomputed() {
        let mut h = IP;
        let old = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
        let new = 0x0a01_0203u32;
        h[16..20].copy_from_slice(&new.to_be_bytes());
        let c = update32(u16::from_be_bytes([h[10], h[11]]), old, new);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&h), 0);
        // TTL 64 -> 63 in the TTL/protocol word.
        let old = u16::from_be_bytes([h[8], h[9]]);
        h[8] -= 1;
        let c = update16(u16::from_be_bytes([h[10], h[11]]), old, u16::from_be_bytes([h[8], h[9]]));
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&h), 0);
    }
}
