//! Gradient checks of the `conv` primitives (see `gradcheck/mod.rs`). The conv2d check also
//! checks `conv2d_input_grad` and `conv2d_weight_grad`, its VJP, as adjoints of conv2d; conv2d
//! itself is checked against its definition written out independently, and against PyTorch.

use super::{check_vjp, random_tensor};
use netc::interp::{EvalContext, Tensor};
use netc::ir::ops::ConvAttrs;
use netc::ir::OpKind;
use proptest::prelude::*;

fn conv2d(attrs: ConvAttrs, x: &Tensor, w: &Tensor) -> Tensor {
    OpKind::Conv2d(attrs).eval(&[x, w], &EvalContext::default())
}

/// Conv2d from its definition, in signed coordinates: `y[n,o,i,j]` sums
/// `x[n, g*C/g + c, i*sh - top + p*dh, j*sw - left + q*dw] * w[o, c, p, q]` over the taps inside x.
fn direct_conv2d(a: &ConvAttrs, x: &Tensor, w: &Tensor) -> Tensor {
    let [n, c, h, wd] = x.shape[..] else {
        panic!("x is 4-D")
    };
    let [o, cg, kh, kw] = w.shape[..] else {
        panic!("w is 4-D")
    };
    let (h, wd) = (h as i64, wd as i64);
    let extent = |input: i64, k: usize, axis: usize| {
        let padded = input + (a.pad[2 * axis] + a.pad[2 * axis + 1]) as i64;
        let span = (a.dilation[axis] * (k - 1) + 1) as i64;
        ((padded - span) / a.stride[axis] as i64 + 1) as usize
    };
    let (oh, ow) = (extent(h, kh, 0), extent(wd, kw, 1));
    let x_at = |b: usize, ch: usize, r: i64, s: i64| {
        if (0..h).contains(&r) && (0..wd).contains(&s) {
            x.data[((b * c + ch) * h as usize + r as usize) * wd as usize + s as usize]
        } else {
            0.0
        }
    };
    let mut y = Vec::new();
    for b in 0..n {
        for oc in 0..o {
            let group = oc / (o / a.groups);
            for i in 0..oh {
                for j in 0..ow {
                    let mut sum = 0.0;
                    for ci in 0..cg {
                        for p in 0..kh {
                            for q in 0..kw {
                                let r =
                                    (i * a.stride[0] + p * a.dilation[0]) as i64 - a.pad[0] as i64;
                                let s =
                                    (j * a.stride[1] + q * a.dilation[1]) as i64 - a.pad[2] as i64;
                                let weight = w.data[((oc * cg + ci) * kh + p) * kw + q];
                                sum += x_at(b, group * cg + ci, r, s) * weight;
                            }
                        }
                    }
                    y.push(sum);
                }
            }
        }
    }
    Tensor::new(vec![n, o, oh, ow], y)
}

#[test]
fn conv2d_on_a_3x3_image() {
    let x = Tensor::new(vec![1, 1, 3, 3], (1..=9).map(f64::from).collect());
    let w = Tensor::new(vec![1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let plain = ConvAttrs {
        stride: [1, 1],
        pad: [0; 4],
        dilation: [1, 1],
        groups: 1,
    };
    let y = conv2d(plain, &x, &w);
    assert_eq!(
        y,
        Tensor::new(vec![1, 1, 2, 2], vec![37.0, 47.0, 67.0, 77.0])
    );
    // Windows start at -1 and 1: the first row and column of windows see mostly padding.
    let strided = ConvAttrs {
        stride: [2, 2],
        pad: [1; 4],
        ..plain
    };
    let y = conv2d(strided, &x, &w);
    assert_eq!(
        y,
        Tensor::new(vec![1, 1, 2, 2], vec![4.0, 18.0, 36.0, 77.0])
    );
}

/// PyTorch's `conv2d(pad(x, (0, 1, 1, 0)), w, stride=(1, 2), dilation=2, groups=2)`.
#[test]
fn conv2d_grouped_dilated_with_asymmetric_padding_matches_pytorch() {
    let x = Tensor::new(vec![1, 2, 4, 4], (0..32).map(f64::from).collect());
    let w = Tensor::new(vec![4, 1, 2, 2], (-7..9).map(f64::from).collect());
    let attrs = ConvAttrs {
        stride: [1, 2],
        pad: [1, 0, 0, 1],
        dilation: [2, 2],
        groups: 2,
    };
    let expected = [
        -44.0, -30.0, -92.0, -64.0, -180.0, -112.0, -4.0, -6.0, -12.0, -16.0, -36.0, -32.0, 148.0,
        66.0, 228.0, 96.0, 268.0, 112.0, 316.0, 154.0, 564.0, 272.0, 668.0, 320.0,
    ];
    assert_eq!(
        conv2d(attrs, &x, &w),
        Tensor::new(vec![1, 4, 3, 2], expected.to_vec())
    );
}

prop_compose! {
    /// Small convolutions with random attributes: `(attrs, x shape, w shape)`. One input channel
    /// per group is the depthwise case. The image is just large enough for the dilated kernel
    /// (less the padding) plus `extra`, so every case fits and wide kernels still give small
    /// outputs.
    fn conv_case()(
        n in 1..=2usize,
        groups in 1..=3usize,
        in_per_group in 1..=2usize,
        out_per_group in 1..=2usize,
        extra in prop::array::uniform2(0..=3usize),
        kernel in prop::array::uniform2(1..=5usize),
        stride in prop::array::uniform2(1..=3usize),
        dilation in prop::array::uniform2(1..=3usize),
        pad in prop::array::uniform4(0..=2usize),
    ) -> (ConvAttrs, Vec<usize>, Vec<usize>) {
        let attrs = ConvAttrs { stride, pad, dilation, groups };
        let extent = |axis: usize| {
            let span = dilation[axis] * (kernel[axis] - 1) + 1;
            span.saturating_sub(pad[2 * axis] + pad[2 * axis + 1]).max(1) + extra[axis]
        };
        let x = vec![n, groups * in_per_group, extent(0), extent(1)];
        let w = vec![groups * out_per_group, in_per_group, kernel[0], kernel[1]];
        (attrs, x, w)
    }
}

proptest! {
    #![proptest_config(super::config())]

    #[test]
    fn conv2d_gradients((attrs, x, w) in conv_case(), seed in any::<u64>()) {
        let kind = OpKind::Conv2d(attrs);
        let inputs = vec![random_tensor(x, seed, -1.0, 1.0), random_tensor(w, !seed, -1.0, 1.0)];
        check_vjp(kind, inputs, &[true, true], seed);
    }

    #[test]
    fn conv2d_matches_its_definition((attrs, x, w) in conv_case(), seed in any::<u64>()) {
        let (x, w) = (random_tensor(x, seed, -1.0, 1.0), random_tensor(w, !seed, -1.0, 1.0));
        let (got, expected) = (conv2d(attrs, &x, &w), direct_conv2d(&attrs, &x, &w));
        prop_assert_eq!(&got.shape, &expected.shape);
        for (g, e) in got.data.iter().zip(&expected.data) {
            prop_assert!((g - e).abs() <= 1e-12, "{:?}: {} vs {}", attrs, g, e);
        }
    }
}
