//! Register-blocked f32 GEMM microkernels: the inner loop of every convolution and dense layer
//! that netc compiles.
//!
//! Generated code packs A into panels of `MR` rows and B into panels of `NR` columns (or reads
//! their rows where they lie, see below), then calls
//! a [`Microkernel`] through a function pointer once per `MR x NR` tile of C, of which the first
//! `height` rows are wanted (fewer than `MR` in the last panel of a matrix of `M % MR != 0` rows):
//!
//! ```text
//! c[i*ldc + j] (+)= sum_{k < kc} a[col(k, i)] * b[row(k) + j]      for i < height, j < NR
//! ```
//!
//! * `a` is A: with `a_rows` 0, its packed panel, `col(k, i) = k*MR + i` (a column-major
//!   `MR x kc` panel); otherwise `col(k, i) = i*a_rows + k`, A's rows read where they lie in a
//!   row-major matrix (a layer's dy, a dense layer's input) instead of being packed first. Only
//!   the first `height` rows are read.
//! * `b` is B: with `rows` null, its packed panel, `row(k) = k*NR` (a row-major `kc x NR`
//!   panel); otherwise `row(k) = rows[k]`, an offset in floats, so that B's rows can be read
//!   where they lie in a tensor (a stride-1 convolution's taps over a padded image) instead of
//!   being copied into a panel first.
//! * `c` is the tile's first element, with a row stride of `ldc` floats (in practice
//!   `ldc >= NR`, and the tile never overlaps itself or the panels).
//! * `accumulate != 0` adds the product to `c`; `accumulate == 0` overwrites `c`. `kc` may be 0:
//!   the tile then becomes 0, or stays as it was when accumulating. A negative `kc` counts as 0.
//! * `height` counts as `MR` when larger, and as 1 when smaller. The native kernels multiply
//!   only those rows, so a 16-row matrix costs 16 rows' work, not 18.
//! * No pointer needs any alignment. Only the `height x NR` tile of `c` is read or written.
//!
//! The kernels are chosen at run time ([`MicrokernelKind::best`]) from the CPU's features:
//! AVX-512 (`netc_microkernel_avx512`, 12 zmm accumulators) or AVX2+FMA
//! (`netc_microkernel_avx2`, two passes of 12 ymm accumulators over 16 columns each). Cranelift
//! cannot emit 256- or 512-bit vector code, so these are written in Rust with `std::arch`;
//! [`MicrokernelKind::Generated`] stands for the portable kernel the compiler emits itself with
//! Cranelift, which has no Rust implementation here.
//!
//! Both exported functions are `extern "C"` and never panic or unwind (generated code has no
//! unwind information). Each checks (one cached atomic load) that the CPU has its features and
//! aborts the process if not, rather than executing an illegal instruction.

/// Rows of a tile (of A's packed panel).
pub const MR: usize = 6;
/// Columns of a tile (of B's packed panel).
pub const NR: usize = 32;

/// `c[i*ldc + j] (+)= sum_k a[col(k, i)] * b[row(k) + j]` for i < height, j < NR, k < kc
/// (`height` clamped to `1..=MR`).
/// `a`: A, element `(i, k)` at `col(k, i)`: `k*MR + i` (a packed panel, MR floats per k) when
/// `a_rows` is 0, else `i*a_rows + k` (rows of a row-major matrix); `b`: B, whose row `k`
/// starts `row(k)` floats on: `k*NR` (a packed panel) when `rows` is null, else `rows[k]`; `c`:
/// the tile, row stride `ldc` floats; `accumulate != 0` adds to `c`, otherwise overwrites it. kc
/// may be 0 (then the tile becomes 0, or stays when accumulating). No alignment is guaranteed
/// for any pointer. `ldc >= NR` always holds in practice; the tile never overlaps itself.
pub type Microkernel = unsafe extern "C" fn(
    kc: i64,
    height: i64,
    a: *const f32,
    a_rows: i64,
    b: *const f32,
    rows: *const i64,
    c: *mut f32,
    ldc: i64,
    accumulate: i64,
);

/// Which microkernel implementation to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MicrokernelKind {
    /// AVX-512F, in Rust: [`netc_microkernel_avx512`].
    Avx512,
    /// AVX2 and FMA, in Rust: [`netc_microkernel_avx2`].
    Avx2,
    /// Emitted by the compiler with Cranelift (128-bit vectors); runs on any CPU.
    Generated,
}

impl MicrokernelKind {
    /// Every kind, best first.
    pub const ALL: [MicrokernelKind; 3] = [
        MicrokernelKind::Avx512,
        MicrokernelKind::Avx2,
        MicrokernelKind::Generated,
    ];

    /// The kind's name on the command line: "avx512", "avx2" or "generic".
    pub fn name(self) -> &'static str {
        match self {
            MicrokernelKind::Avx512 => "avx512",
            MicrokernelKind::Avx2 => "avx2",
            MicrokernelKind::Generated => "generic",
        }
    }

    /// The kind whose [`name`](Self::name) is `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether this CPU can run the kind: AVX-512F for `Avx512`, AVX2 and FMA for `Avx2`;
    /// `Generated` always.
    pub fn available(self) -> bool {
        match self {
            MicrokernelKind::Avx512 => has_avx512(),
            MicrokernelKind::Avx2 => has_avx2_fma(),
            MicrokernelKind::Generated => true,
        }
    }

    /// The fastest kind this CPU can run.
    pub fn best() -> Self {
        Self::ALL
            .into_iter()
            .find(|kind| kind.available())
            .unwrap_or(MicrokernelKind::Generated)
    }

    /// The Rust implementation, where there is one; `Generated` is emitted by the compiler with
    /// Cranelift, so None; None too when the CPU lacks the features.
    pub fn native(self) -> Option<Microkernel> {
        if !self.available() {
            return None;
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            MicrokernelKind::Avx512 => Some(netc_microkernel_avx512 as Microkernel),
            #[cfg(target_arch = "x86_64")]
            MicrokernelKind::Avx2 => Some(netc_microkernel_avx2 as Microkernel),
            _ => None,
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2_fma() -> bool {
    false
}

/// The AVX-512 microkernel (see [`Microkernel`]). Aborts if the CPU lacks AVX-512F.
///
/// # Safety
/// `a` must be readable for `MR * kc` floats (packed) or `kc` floats from each of the first
/// `height` rows; `rows`, unless null, for `kc` offsets; `b` for
/// `NR` floats from each row's offset; `c` readable and writable for the `height x NR` tile
/// with row stride `ldc`; none of them may overlap the tile.
#[no_mangle]
pub unsafe extern "C" fn netc_microkernel_avx512(
    kc: i64,
    height: i64,
    a: *const f32,
    a_rows: i64,
    b: *const f32,
    rows: *const i64,
    c: *mut f32,
    ldc: i64,
    accumulate: i64,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if !has_avx512() {
            std::process::abort();
        }
        // SAFETY: the CPU has AVX-512F (checked above); the pointers are valid as the caller
        // promised.
        unsafe {
            x86::dispatch!(
                x86::avx512,
                (kc, height, a, a_rows, b, rows, c, ldc, accumulate)
            )
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kc, height, a, a_rows, b, rows, c, ldc, accumulate);
        std::process::abort();
    }
}

/// The AVX2+FMA microkernel (see [`Microkernel`]). Aborts if the CPU lacks AVX2 or FMA.
///
/// # Safety
/// As for [`netc_microkernel_avx512`].
#[no_mangle]
pub unsafe extern "C" fn netc_microkernel_avx2(
    kc: i64,
    height: i64,
    a: *const f32,
    a_rows: i64,
    b: *const f32,
    rows: *const i64,
    c: *mut f32,
    ldc: i64,
    accumulate: i64,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if !has_avx2_fma() {
            std::process::abort();
        }
        // SAFETY: the CPU has AVX2 and FMA (checked above); the pointers are valid as the
        // caller promised.
        unsafe {
            x86::dispatch!(
                x86::avx2,
                (kc, height, a, a_rows, b, rows, c, ldc, accumulate)
            )
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kc, height, a, a_rows, b, rows, c, ldc, accumulate);
        std::process::abort();
    }
}

/// The kernels themselves (AVX-512 intrinsics are stable since Rust 1.89, hence the
/// workspace's `rust-version`).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// How many k steps each loop iteration does.
    const UNROLL: usize = 4;

    /// Calls `$kernel::<height>(args)` for a `height` in `1..=MR`.
    macro_rules! by_height {
        ($($kernel:ident)::+, $height:expr, $($arg:expr),*) => {
            match $height {
                1 => $($kernel)::+::<1>($($arg),*),
                2 => $($kernel)::+::<2>($($arg),*),
                3 => $($kernel)::+::<3>($($arg),*),
                4 => $($kernel)::+::<4>($($arg),*),
                5 => $($kernel)::+::<5>($($arg),*),
                _ => $($kernel)::+::<6>($($arg),*),
            }
        };
    }
    const _: () = assert!(MR == 6, "by_height covers heights 1 to 6");

    /// Runs `$kernel` on the exported functions' arguments: `kc` and `height` clamped, A and B
    /// packed or placed as `a_rows` and `rows` say, the kernel for that height.
    macro_rules! dispatch {
        ($($kernel:ident)::+, ($kc:expr, $height:expr, $a:expr, $a_rows:expr, $b:expr,
         $rows:expr, $c:expr, $ldc:expr, $accumulate:expr)) => {{
            let (kc, ldc, accumulate) = ($kc.max(0) as usize, $ldc as isize, $accumulate != 0);
            let height = $height.clamp(1, MR as i64);
            macro_rules! with_b {
                ($a_cols:expr) => {
                    match x86::BRows::new($b, $rows) {
                        x86::BRows::Packed(b) => x86::by_height!(
                            $($kernel)::+, height, kc, $a_cols, b, $c, ldc, accumulate
                        ),
                        x86::BRows::Placed(b) => x86::by_height!(
                            $($kernel)::+, height, kc, $a_cols, b, $c, ldc, accumulate
                        ),
                    }
                };
            }
            match x86::ACols::new($a, $a_rows) {
                x86::ACols::Packed(a) => with_b!(a),
                x86::ACols::Placed(a) => with_b!(a),
            }
        }};
    }
    pub(super) use {by_height, dispatch};

    /// One k step of the AVX-512 kernel: two zmm of `b`, six broadcasts of `a`, 12 FMAs.
    macro_rules! step512 {
        ($acc:ident, $a:expr, $k:expr, $b:expr) => {{
            let b = $b;
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            for i in 0..$acc.len() {
                let ai = _mm512_set1_ps(*$a.at($k, i));
                $acc[i][0] = _mm512_fmadd_ps(ai, b0, $acc[i][0]);
                $acc[i][1] = _mm512_fmadd_ps(ai, b1, $acc[i][1]);
            }
        }};
    }

    /// Where B's row `k` starts, for a kernel monomorphised over the two ways B is given.
    pub(super) trait Rows: Copy {
        /// # Safety
        /// `k < kc`, with the row's `NR` floats readable (the kernel's contract).
        unsafe fn row(self, k: usize) -> *const f32;
    }

    /// A packed panel: row `k` at `k * NR`.
    #[derive(Clone, Copy)]
    pub(super) struct PackedB(*const f32);

    /// Rows where they lie: row `k` at `offsets[k]`.
    #[derive(Clone, Copy)]
    pub(super) struct PlacedB {
        b: *const f32,
        offsets: *const i64,
    }

    impl Rows for PackedB {
        #[inline(always)]
        unsafe fn row(self, k: usize) -> *const f32 {
            // SAFETY: the caller keeps `k` inside the panel.
            unsafe { self.0.add(k * NR) }
        }
    }

    impl Rows for PlacedB {
        #[inline(always)]
        unsafe fn row(self, k: usize) -> *const f32 {
            // SAFETY: the caller keeps `k < kc`; `offsets[k]` points at a readable row.
            unsafe { self.b.offset(*self.offsets.add(k) as isize) }
        }
    }

    /// Where A's element `(i, k)` lies, for a kernel monomorphised over the two ways A is given.
    pub(super) trait Cols: Copy {
        /// # Safety
        /// `k < kc` and `i < height` (the kernel's contract).
        unsafe fn at(self, k: usize, i: usize) -> *const f32;
    }

    /// A packed panel: element `(i, k)` at `k * MR + i`.
    #[derive(Clone, Copy)]
    pub(super) struct PackedA(*const f32);

    /// Rows where they lie: element `(i, k)` at `i * rows + k`.
    #[derive(Clone, Copy)]
    pub(super) struct PlacedA {
        a: *const f32,
        rows: isize,
    }

    impl Cols for PackedA {
        #[inline(always)]
        unsafe fn at(self, k: usize, i: usize) -> *const f32 {
            // SAFETY: the caller keeps `k` and `i` inside the panel.
            unsafe { self.0.add(k * MR + i) }
        }
    }

    impl Cols for PlacedA {
        #[inline(always)]
        unsafe fn at(self, k: usize, i: usize) -> *const f32 {
            // SAFETY: the caller keeps `k < kc` and `i < height`, which are readable.
            unsafe { self.a.offset((i as isize).wrapping_mul(self.rows)).add(k) }
        }
    }

    /// A as the exported functions receive it.
    pub(super) enum ACols {
        Packed(PackedA),
        Placed(PlacedA),
    }

    impl ACols {
        pub(super) fn new(a: *const f32, rows: i64) -> ACols {
            if rows == 0 {
                ACols::Packed(PackedA(a))
            } else {
                ACols::Placed(PlacedA {
                    a,
                    rows: rows as isize,
                })
            }
        }
    }

    /// B as the exported functions receive it.
    pub(super) enum BRows {
        Packed(PackedB),
        Placed(PlacedB),
    }

    impl BRows {
        pub(super) fn new(b: *const f32, rows: *const i64) -> BRows {
            if rows.is_null() {
                BRows::Packed(PackedB(b))
            } else {
                BRows::Placed(PlacedB { b, offsets: rows })
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX-512F; pointers as for [`super::Microkernel`], `kc` of them.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512<const HEIGHT: usize>(
        kc: usize,
        a: impl Cols,
        b: impl Rows,
        c: *mut f32,
        ldc: isize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; HEIGHT];
        let mut k = 0;
        // SAFETY: A holds `kc` columns of its first `HEIGHT` rows and B `kc` rows; every load
        // below stays in step `k < kc`.
        unsafe {
            while k + UNROLL <= kc {
                step512!(acc, a, k, b.row(k));
                step512!(acc, a, k + 1, b.row(k + 1));
                step512!(acc, a, k + 2, b.row(k + 2));
                step512!(acc, a, k + 3, b.row(k + 3));
                k += UNROLL;
            }
            while k < kc {
                step512!(acc, a, k, b.row(k));
                k += 1;
            }
        }
        // SAFETY: the tile's row `i` is `c[i*ldc .. i*ldc + NR]`, readable and writable.
        unsafe {
            for (i, row) in acc.iter().enumerate() {
                let ci = c.offset((i as isize).wrapping_mul(ldc));
                let (mut r0, mut r1) = (row[0], row[1]);
                if accumulate {
                    r0 = _mm512_add_ps(r0, _mm512_loadu_ps(ci));
                    r1 = _mm512_add_ps(r1, _mm512_loadu_ps(ci.add(16)));
                }
                _mm512_storeu_ps(ci, r0);
                _mm512_storeu_ps(ci.add(16), r1);
            }
        }
    }

    /// One k step of an AVX2 pass: two ymm of `b`, six broadcasts of `a`, 12 FMAs.
    macro_rules! step256 {
        ($acc:ident, $a:expr, $k:expr, $b:expr) => {{
            let b = $b;
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for i in 0..$acc.len() {
                let ai = _mm256_broadcast_ss(&*$a.at($k, i));
                $acc[i][0] = _mm256_fmadd_ps(ai, b0, $acc[i][0]);
                $acc[i][1] = _mm256_fmadd_ps(ai, b1, $acc[i][1]);
            }
        }};
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA; pointers as for [`super::Microkernel`], `kc` of them.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<const HEIGHT: usize>(
        kc: usize,
        a: impl Cols,
        b: impl Rows,
        c: *mut f32,
        ldc: isize,
        accumulate: bool,
    ) {
        // 24 ymm accumulators would not fit in 16 registers: two passes of 16 columns each.
        for half in 0..NR / 16 {
            let col = half * 16;
            let mut acc = [[_mm256_setzero_ps(); 2]; HEIGHT];
            let mut k = 0;
            // SAFETY: as in `avx512`; the loads read columns `col .. col + 16 <= NR` of a row.
            unsafe {
                while k + UNROLL <= kc {
                    step256!(acc, a, k, b.row(k).add(col));
                    step256!(acc, a, k + 1, b.row(k + 1).add(col));
                    step256!(acc, a, k + 2, b.row(k + 2).add(col));
                    step256!(acc, a, k + 3, b.row(k + 3).add(col));
                    k += UNROLL;
                }
                while k < kc {
                    step256!(acc, a, k, b.row(k).add(col));
                    k += 1;
                }
            }
            // SAFETY: columns `col .. col + 16` of the tile's row `i`, inside the tile.
            unsafe {
                for (i, row) in acc.iter().enumerate() {
                    let ci = c.offset((i as isize).wrapping_mul(ldc)).add(col);
                    let (mut r0, mut r1) = (row[0], row[1]);
                    if accumulate {
                        r0 = _mm256_add_ps(r0, _mm256_loadu_ps(ci));
                        r1 = _mm256_add_ps(r1, _mm256_loadu_ps(ci.add(8)));
                    }
                    _mm256_storeu_ps(ci, r0);
                    _mm256_storeu_ps(ci.add(8), r1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator of floats in [-1, 1).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32) / (1u64 << 23) as f32 - 1.0
        }

        fn fill(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.next()).collect()
        }
    }

    /// The kinds with a Rust implementation on this CPU.
    fn natives() -> Vec<(MicrokernelKind, Microkernel)> {
        MicrokernelKind::ALL
            .into_iter()
            .filter_map(|kind| kind.native().map(|f| (kind, f)))
            .collect()
    }

    /// Runs `kernel` on one random case and compares with an f64 reference: the first `height`
    /// rows of a tile. B is a packed panel, or with `placed` its rows lie in reverse order
    /// `NR + 3` floats apart, found through `rows`; A is a packed panel, or with `placed_a` the
    /// first `height` rows of a row-major matrix whose rows are `kc + 5` floats apart, the
    /// floats past them NaN (which must not be read).
    fn check(
        kind: MicrokernelKind,
        kernel: Microkernel,
        [kc, height, ldc]: [usize; 3],
        acc: bool,
        [placed_a, placed]: [bool; 2],
    ) {
        let case = format!(
            "{kind:?} kc={kc} height={height} ldc={ldc} acc={acc} placed_a={placed_a} \
             placed={placed}"
        );
        let seed = kc * 1000 + height * 100 + ldc * 10 + acc as usize + 2 * placed as usize;
        let mut rng = Lcg(seed as u64 + 1 + placed_a as u64);
        let a_rows = if placed_a { kc + 5 } else { 0 };
        let a_index = |i: usize, k: usize| if placed_a { i * a_rows + k } else { k * MR + i };
        let row_stride = if placed { NR + 3 } else { NR };
        let offsets: Vec<i64> = (0..kc)
            .map(|k| (if placed { kc - 1 - k } else { k } * row_stride) as i64)
            .collect();
        // One spare element before and after each panel, and spare rows after the tile, to
        // catch reads or writes out of bounds (at least the writes are checked).
        let mut a = rng.fill(MR * (kc + 5) + 2);
        if placed_a {
            for value in &mut a[1 + height * a_rows..] {
                *value = f32::NAN;
            }
        }
        let b = rng.fill(row_stride * kc + 2);
        let rows = MR + 2;
        let c0 = rng.fill(rows * ldc + 1);
        let mut c = c0.clone();
        let rows_pointer = if placed {
            offsets.as_ptr()
        } else {
            std::ptr::null()
        };
        // Offset by one float so that nothing is aligned.
        // SAFETY: A's panel holds `MR * kc` floats past the offset, B's rows `NR` floats from
        // each offset, and `c` the `height x NR` tile with stride `ldc` past it.
        unsafe {
            kernel(
                kc as i64,
                height as i64,
                a.as_ptr().add(1),
                a_rows as i64,
                b.as_ptr().add(1),
                rows_pointer,
                c.as_mut_ptr().add(1),
                ldc as i64,
                acc as i64,
            )
        };
        for (index, (&got, &before)) in c.iter().zip(&c0).enumerate() {
            let inside = index >= 1 && (index - 1) / ldc < height && (index - 1) % ldc < NR;
            if !inside {
                assert_eq!(
                    got.to_bits(),
                    before.to_bits(),
                    "{case}: element {index} outside the tile changed"
                );
                continue;
            }
            let (i, j) = ((index - 1) / ldc, (index - 1) % ldc);
            let mut want = if acc { before as f64 } else { 0.0 };
            let mut magnitude = want.abs();
            for (k, &offset) in offsets.iter().enumerate() {
                let p = a[1 + a_index(i, k)] as f64 * b[1 + offset as usize + j] as f64;
                want += p;
                magnitude += p.abs();
            }
            let error = (got as f64 - want).abs();
            assert!(
                error <= 1e-5 * magnitude.max(1e-30) + f64::MIN_POSITIVE,
                "{case} c[{i}][{j}]: got {got}, want {want}"
            );
        }
    }

    #[test]
    fn native_kernels_match_reference() {
        for (kind, kernel) in natives() {
            for kc in [0, 1, 2, 3, 5, 17, 256] {
                for height in 1..=MR {
                    for ldc in [32, 40] {
                        for acc in [false, true] {
                            for placed_a in [false, true] {
                                for placed in [false, true] {
                                    let ways = [placed_a, placed];
                                    check(kind, kernel, [kc, height, ldc], acc, ways);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn zero_kc_clears_or_keeps_the_tile() {
        for (kind, kernel) in natives() {
            for acc in [0, 1] {
                let mut c = vec![7.0f32; MR * NR];
                // SAFETY: kc = 0 reads nothing from the panels; `c` is the whole tile.
                unsafe {
                    let none = std::ptr::null();
                    kernel(
                        0,
                        MR as i64,
                        none,
                        0,
                        none,
                        std::ptr::null(),
                        c.as_mut_ptr(),
                        NR as i64,
                        acc,
                    )
                };
                let want = if acc != 0 { 7.0 } else { 0.0 };
                assert!(c.iter().all(|&x| x == want), "{kind:?} acc={acc}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for kind in MicrokernelKind::ALL {
            assert_eq!(MicrokernelKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(MicrokernelKind::Generated.name(), "generic");
        assert_eq!(
            MicrokernelKind::from_name("avx512"),
            Some(MicrokernelKind::Avx512)
        );
        assert_eq!(
            MicrokernelKind::from_name("avx2"),
            Some(MicrokernelKind::Avx2)
        );
        assert_eq!(MicrokernelKind::from_name("sse"), None);
    }

    #[test]
    fn best_is_available() {
        let best = MicrokernelKind::best();
        assert!(best.available());
        assert!(MicrokernelKind::Generated.available());
        assert!(MicrokernelKind::Generated.native().is_none());
        for kind in MicrokernelKind::ALL {
            if kind != MicrokernelKind::Generated {
                assert_eq!(kind.native().is_some(), kind.available(), "{kind:?}");
            }
        }
        // A better kind than `best` is never available.
        for kind in MicrokernelKind::ALL {
            if kind == best {
                break;
            }
            assert!(
                !kind.available(),
                "{kind:?} is available but best() is {best:?}"
            );
        }
    }

    /// Correctness at the benchmark's size, and the kernels' speed (printed, not asserted: the
    /// figure depends on the machine and its load). Run with `--nocapture` to see it.
    #[test]
    fn throughput() {
        let kc = 256;
        let panels = 8;
        let mut rng = Lcg(99);
        let a = rng.fill(MR * kc);
        let b = rng.fill(NR * kc * panels);
        let ldc = NR * panels;
        for (kind, kernel) in natives() {
            let mut c = vec![0.0f32; MR * ldc];
            let mut run = |reps: usize| {
                for _ in 0..reps {
                    for p in 0..panels {
                        // SAFETY: panel `p` of B and tile `p` of C are in bounds.
                        unsafe {
                            kernel(
                                kc as i64,
                                MR as i64,
                                a.as_ptr(),
                                0,
                                b.as_ptr().add(p * NR * kc),
                                std::ptr::null(),
                                c.as_mut_ptr().add(p * NR),
                                ldc as i64,
                                0,
                            )
                        };
                    }
                }
            };
            run(100);
            let reps = if cfg!(debug_assertions) { 20 } else { 4000 };
            let start = std::time::Instant::now();
            run(reps);
            let seconds = start.elapsed().as_secs_f64();
            let flops = 2.0 * (MR * NR * kc * panels * reps) as f64;
            eprintln!(
                "microkernel {}: {:.1} GFLOP/s (kc={kc}, {panels} B panels in L2, one A panel)",
                kind.name(),
                flops / seconds / 1e9
            );
            for j in [0, 1, NR * panels - 1] {
                for i in 0..MR {
                    let want: f64 = (0..kc)
                        .map(|k| {
                            a[k * MR + i] as f64 * b[(j / NR) * NR * kc + k * NR + j % NR] as f64
                        })
                        .sum();
                    let got = c[i * ldc + j] as f64;
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{kind:?}");
                }
            }
        }
    }
}
