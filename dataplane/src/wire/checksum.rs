//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624, eqn. 3), used when
//! actions rewrite addresses, ports, TTL or DSCP.

/// One's-complement sum of `data` folded to 16 bits (not inverted).
pub fn sum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        s += if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) as u32 } else { (c[0] as u32) << 8 };
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
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
