//! The number formats of the native engine: the GGUF weight formats it multiplies ([`QType`]),
//! the activation form each multiplies with, and the scalar half-float conversion.

/// A weight format this engine multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum QType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

// === impl QType ===

impl QType {
    /// The GGML type id (`ggml_type`), as GGUF tensor infos store it.
    pub(crate) fn from_ggml(dtype: candle_core::quantized::GgmlDType) -> Option<Self> {
        use candle_core::quantized::GgmlDType as G;
        Some(match dtype {
            G::F32 => Self::F32,
            G::F16 => Self::F16,
            G::BF16 => Self::BF16,
            G::Q4_0 => Self::Q4_0,
            G::Q4_1 => Self::Q4_1,
            G::Q5_0 => Self::Q5_0,
            G::Q5_1 => Self::Q5_1,
            G::Q8_0 => Self::Q8_0,
            G::Q2K => Self::Q2K,
            G::Q3K => Self::Q3K,
            G::Q4K => Self::Q4K,
            G::Q5K => Self::Q5K,
            G::Q6K => Self::Q6K,
            _ => return None,
        })
    }

    /// Values per block.
    pub(crate) fn block(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => 32,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub(crate) fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q2K => 84,
            Self::Q3K => 110,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    /// The activation form this weight format multiplies with.
    pub(super) fn acts(self) -> ActForm {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => ActForm::F32,
            Self::Q4_0 | Self::Q5_0 => ActForm::Q8Lanes,
            Self::Q4_1 | Self::Q5_1 | Self::Q8_0 => ActForm::Q8,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K => ActForm::Q8K,
        }
    }
}

/// The form of the activations a weight format multiplies with: as they are, or quantized to
/// 8 bits in blocks of 32 (Q8, and Q8Lanes: the same values in [`lane_groups`]' order) or 256
/// (Q8K).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ActForm {
    F32,
    Q8,
    Q8Lanes,
    Q8K,
}

/// Blocks of 32 values in a lane group (Q4_0's and Q5_0's repacked rows and their activations).
pub(super) const LANE_GROUP: usize = 8;

/// The lane order of a group of `g` blocks of 32 values (`g` is 8, or 4 for a row's last
/// blocks), which lets one integer multiply-add instruction sum 4 values of each block into
/// its own 32-bit lane: position `p` holds the group's value `lane_source(p, g)`, where
/// `p = 4g·r + 4l + k` is value `4r + k` of block `l` (run `r` of `4g` bytes: 4 values of every
/// block).
pub(super) const fn lane_source(p: usize, g: usize) -> usize {
    let (r, l, k) = (p / (4 * g), p % (4 * g) / 4, p % 4);
    32 * l + 4 * r + k
}

/// The lane groups of a row of `blocks` blocks of 32: `(first block, blocks in the group)`,
/// groups of 8, then one of 4 where at least 4 blocks are left; the rest (fewer than 4) keeps
/// its own order.
pub(super) fn lane_groups(blocks: usize) -> impl Iterator<Item = (usize, usize)> {
    let whole = blocks / LANE_GROUP;
    let quad = (blocks % LANE_GROUP >= 4).then_some((whole * LANE_GROUP, 4));
    (0..whole).map(|g| (g * LANE_GROUP, LANE_GROUP)).chain(quad)
}

/// IEEE half to single (scalar; the kernels use F16C).
#[inline]
pub(crate) fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits & 0x8000) << 16;
    if bits & 0x7C00 == 0x7C00 {
        // Infinity and NaN keep their mantissa.
        return f32::from_bits(sign | 0x7F80_0000 | (u32::from(bits & 0x3FF) << 13));
    }
    // Exponent and mantissa moved into place, rebiased by a multiply by 2¹¹² (subnormals and
    // zero included). No vector register: a vector conversion of one scalar makes LLVM merge
    // into a live register, chaining every kernel block onto the previous one.
    let magnitude = f32::from_bits(u32::from(bits & 0x7FFF) << 13) * f32::from_bits(0x7780_0000);
    f32::from_bits(magnitude.to_bits() | sign)
}

/// The 16 signed scales of a Q3_K block from its 12 packed bytes: 6-bit values, the low 4 bits
/// of scale `i` in nibble `i` of the first 8 bytes (scales 0..8 in the low nibbles, 8..16 in the
/// high ones), the high 2 bits in bits `2 · (i / 4)` of byte `8 + i % 4`; each minus 32.
pub(crate) fn q3k_scales(s: &[u8; 12]) -> [i8; 16] {
    const LOW: u32 = 0x0F0F_0F0F;
    const TWO: u32 = 0x0303_0303;
    let word = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a0, a1, high) = (word(0), word(1), word(2));
    let words = [
        (a0 & LOW) | ((high & TWO) << 4),
        (a1 & LOW) | (((high >> 2) & TWO) << 4),
        ((a0 >> 4) & LOW) | (((high >> 4) & TWO) << 4),
        ((a1 >> 4) & LOW) | (((high >> 6) & TWO) << 4),
    ];
    let mut out = [0i8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (words[i / 4].to_le_bytes()[i % 4] as i8) - 32;
    }
    out
}
