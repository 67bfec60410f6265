//! Gradient checks of the `pool` primitives (see `gradcheck/mod.rs`): max and average pooling,
//! which check `maxpool_grad` and `avgpool_grad` as their VJPs. Their values are checked against
//! PyTorch's numbers on small cases (ceil mode, both divisor rules, padding that never wins, the
//! first maximum taking the gradient) and against PyTorch's loops transliterated, on random ones.

use super::{check_vjp, random_tensor};
use netc::interp::{EvalContext, Tensor};
use netc::ir::ops::PoolAttrs;
use netc::ir::OpKind;
use proptest::prelude::*;

fn eval(kind: OpKind, inputs: &[&Tensor]) -> Tensor {
    kind.eval(inputs, &EvalContext::default())
}

/// A square window with PyTorch's symmetric padding.
fn square(kernel: usize, stride: usize, pad: usize, ceil: bool, include_pad: bool) -> PoolAttrs {
    PoolAttrs {
        kernel: [kernel; 2],
        stride: [stride; 2],
        pad: [pad; 4],
        ceil,
        include_pad,
    }
}

fn image(side: usize, data: impl IntoIterator<Item = f64>) -> Tensor {
    Tensor::new(vec![1, 1, side, side], data.into_iter().collect())
}

fn assert_close(got: &Tensor, expected: &Tensor) {
    assert_eq!(got.shape, expected.shape);
    for (g, e) in got.data.iter().zip(&expected.data) {
        assert!(
            (g - e).abs() <= 1e-12,
            "got {:?}, expected {:?}",
            got.data,
            expected.data
        );
    }
}

/// PyTorch's `AvgPool2d(3, stride=2, padding=1, ceil_mode=True)` on ones: with
/// `count_include_pad` every window divides by 9, padded zeros included; without, the mean of
/// ones is one.
#[test]
fn avgpool_divisors_on_ones() {
    let ones = Tensor::full(vec![1, 1, 5, 5], 1.0);
    let y = eval(OpKind::AvgPool(square(3, 2, 1, true, true)), &[&ones]);
    let (corner, edge) = (4.0 / 9.0, 6.0 / 9.0);
    assert_close(
        &y,
        &image(
            3,
            [corner, edge, corner, edge, 1.0, edge, corner, edge, corner],
        ),
    );
    let y = eval(OpKind::AvgPool(square(3, 2, 1, true, false)), &[&ones]);
    assert_close(&y, &Tensor::full(vec![1, 1, 3, 3], 1.0));
}

/// In ceil mode the last window overhangs the padded input; PyTorch's `count_include_pad`
/// divisor counts only its cells within the padded input (6, not 9, on the last row).
#[test]
fn avgpool_ceil_mode_matches_pytorch() {
    let x = image(6, (0..36).map(f64::from));
    let with_pad = eval(OpKind::AvgPool(square(3, 2, 1, true, true)), &[&x]);
    let expected = [
        14.0 / 9.0,
        30.0 / 9.0,
        42.0 / 9.0,
        16.0 / 6.0,
        75.0 / 9.0,
        14.0,
        16.0,
        51.0 / 6.0,
        147.0 / 9.0,
        26.0,
        28.0,
        87.0 / 6.0,
        61.0 / 6.0,
        16.0,
        17.0,
        35.0 / 4.0,
    ];
    assert_close(&with_pad, &image(4, expected));
    let without_pad = eval(OpKind::AvgPool(square(3, 2, 1, true, false)), &[&x]);
    let expected = [
        3.5, 5.0, 7.0, 8.0, 12.5, 14.0, 16.0, 17.0, 24.5, 26.0, 28.0, 29.0, 30.5, 32.0, 34.0, 35.0,
    ];
    assert_close(&without_pad, &image(4, expected));
    // Without padding the overhang is past the input: both rules divide by the 2 or 1 cells.
    let x = image(5, (0..25).map(f64::from));
    let expected = image(3, [3.0, 5.0, 6.5, 13.0, 15.0, 16.5, 20.5, 22.5, 24.0]);
    for include_pad in [true, false] {
        let y = eval(OpKind::AvgPool(square(2, 2, 0, true, include_pad)), &[&x]);
        assert_close(&y, &expected);
    }
}

#[test]
fn maxpool_padding_never_wins() {
    let x = image(3, (1..=9).map(|v| -f64::from(v)));
    for ceil in [false, true] {
        let y = eval(OpKind::MaxPool(square(2, 2, 1, ceil, false)), &[&x]);
        assert_eq!(y, image(2, [-1.0, -2.0, -4.0, -5.0]));
    }
}

/// Padding wider than the window, which PyTorch rejects, leaves windows with no cells: they
/// give zero rather than -inf or a division by zero.
#[test]
fn windows_of_padding_alone_give_zero() {
    let x = Tensor::new(vec![1, 1, 1, 2], vec![-3.0, -5.0]);
    let attrs = PoolAttrs {
        kernel: [1, 1],
        stride: [1, 1],
        pad: [1, 0, 0, 0],
        ceil: false,
        include_pad: false,
    };
    let expected = Tensor::new(vec![1, 1, 2, 2], vec![0.0, 0.0, -3.0, -5.0]);
    assert_eq!(eval(OpKind::MaxPool(attrs), &[&x]), expected);
    for include_pad in [false, true] {
        let attrs = PoolAttrs {
            include_pad,
            ..attrs
        };
        assert_eq!(eval(OpKind::AvgPool(attrs), &[&x]), expected);
    }
}

/// PyTorch's `max_pool2d` backward: each window's gradient goes to its first maximum in
/// row-major order, summed where windows overlap.
#[test]
fn maxpool_grad_picks_the_first_maximum() {
    let ones = image(3, [1.0; 9]);
    let dx = eval(
        OpKind::MaxPoolGrad(square(2, 1, 0, false, false)),
        &[&ones, &image(2, [1.0; 4])],
    );
    assert_eq!(dx, image(3, [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]));
    #[rustfmt::skip]
    let x = image(4, [
        0.0, 1.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
        1.0, 0.0, 0.0, 1.0,
    ]);
    let dy = image(2, [1.0, 2.0, 3.0, 4.0]);
    let dx = eval(
        OpKind::MaxPoolGrad(square(3, 1, 0, false, false)),
        &[&x, &dy],
    );
    let mut expected = [0.0; 16];
    (expected[1], expected[12], expected[15]) = (3.0, 3.0, 4.0);
    assert_eq!(dx, image(4, expected));
}

/// PyTorch's output size and CPU pooling loops (`max_pool2d`, `avg_pool2d`) transliterated in
/// signed coordinates, padding generalised to four sides; an empty window gives 0.
fn pytorch_pool(a: &PoolAttrs, x: &Tensor, max: bool) -> Tensor {
    let [n, c, h, w] = x.shape[..] else {
        panic!("x is 4-D")
    };
    let out = |input: usize, axis: usize| {
        let (k, s) = (a.kernel[axis] as i64, a.stride[axis] as i64);
        let (pad_l, pad_r) = (a.pad[2 * axis] as i64, a.pad[2 * axis + 1] as i64);
        let input = input as i64;
        let numerator = input + pad_l + pad_r - (k - 1) - 1 + if a.ceil { s - 1 } else { 0 };
        let mut size = numerator.div_euclid(s) + 1;
        if a.ceil && (size - 1) * s >= input + pad_l {
            size -= 1;
        }
        size as usize
    };
    let (oh, ow) = (out(h, 0), out(w, 1));
    let (hi, wi) = (h as i64, w as i64);
    let mut y = Vec::new();
    for plane in 0..n * c {
        let at = |r: i64, s: i64| x.data[(plane * h + r as usize) * w + s as usize];
        for i in 0..oh as i64 {
            for j in 0..ow as i64 {
                let hstart = i * a.stride[0] as i64 - a.pad[0] as i64;
                let wstart = j * a.stride[1] as i64 - a.pad[2] as i64;
                let value = if max {
                    let (hend, wend) = (
                        (hstart + a.kernel[0] as i64).min(hi),
                        (wstart + a.kernel[1] as i64).min(wi),
                    );
                    let mut best: Option<f64> = None;
                    for r in hstart.max(0)..hend {
                        for s in wstart.max(0)..wend {
                            if best.is_none_or(|b| at(r, s) > b) {
                                best = Some(at(r, s));
                            }
                        }
                    }
                    best.unwrap_or(0.0)
                } else {
                    let hend = (hstart + a.kernel[0] as i64).min(hi + a.pad[1] as i64);
                    let wend = (wstart + a.kernel[1] as i64).min(wi + a.pad[3] as i64);
                    let pool_size = (hend - hstart) * (wend - wstart);
                    let (hstart, wstart, hend, wend) =
                        (hstart.max(0), wstart.max(0), hend.min(hi), wend.min(wi));
                    if hstart >= hend || wstart >= wend {
                        0.0
                    } else {
                        let sum: f64 = (hstart..hend)
                            .flat_map(|r| (wstart..wend).map(move |s| at(r, s)))
                            .sum();
                        let divisor = if a.include_pad {
                            pool_size
                        } else {
                            (hend - hstart) * (wend - wstart)
                        };
                        sum / divisor as f64
                    }
                };
                y.push(value);
            }
        }
    }
    Tensor::new(vec![n, c, oh, ow], y)
}

prop_compose! {
    /// Small pooling windows with random attributes, padding up to 2 on each side (beyond half
    /// the window sometimes, which PyTorch forbids but netc's ops define): `(attrs, x shape)`. The
    /// image is large enough for the window (less the padding) plus `extra`, so every case fits.
    pub fn pool_case()(
        n in 1..=2usize,
        c in 1..=2usize,
        extra in prop::array::uniform2(0..=4usize),
        kernel in prop::array::uniform2(1..=5usize),
        stride in prop::array::uniform2(1..=3usize),
        pad in prop::array::uniform4(0..=2usize),
        ceil in any::<bool>(),
        include_pad in any::<bool>(),
    ) -> (PoolAttrs, Vec<usize>) {
        let extent = |axis: usize| {
            kernel[axis].saturating_sub(pad[2 * axis] + pad[2 * axis + 1]).max(1) + extra[axis]
        };
        let x = vec![n, c, extent(0), extent(1)];
        (PoolAttrs { kernel, stride, pad, ceil, include_pad }, x)
    }
}

proptest! {
    #![proptest_config(super::config())]

    #[test]
    fn maxpool_gradients((attrs, x) in pool_case(), seed in any::<u64>()) {
        let kind = OpKind::MaxPool(attrs);
        check_vjp(kind, vec![random_tensor(x, seed, -1.0, 1.0)], &[true], seed);
    }

    #[test]
    fn avgpool_gradients((attrs, x) in pool_case(), seed in any::<u64>()) {
        let kind = OpKind::AvgPool(attrs);
        check_vjp(kind, vec![random_tensor(x, seed, -1.0, 1.0)], &[true], seed);
    }

    #[test]
    fn pooling_matches_pytorch_loops((attrs, x) in pool_case(), seed in any::<u64>()) {
        let x = random_tensor(x, seed, -1.0, 1.0);
        for (kind, max) in [(OpKind::MaxPool(attrs), true), (OpKind::AvgPool(attrs), false)] {
            let (got, expected) = (eval(kind, &[&x]), pytorch_pool(&attrs, &x, max));
            prop_assert_eq!(&got.shape, &expected.shape);
            for (g, e) in got.data.iter().zip(&expected.data) {
                prop_assert!((g - e).abs() <= 1e-12, "{:?} max={}: {} vs {}", attrs, max, g, e);
            }
        }
    }
}
