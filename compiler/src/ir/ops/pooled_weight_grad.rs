//! `pooled_conv2d_weight_grad`: the weight gradient of a convolution whose output is max-pooled,
//! from the pooled gradient and the indices of the pool's maxima, which the forward pool stored
//! (`maxpool_with_indices`). Max pooling's gradient is dy at each window's first maximum and
//! zero elsewhere, so the weight gradient is a sum over windows, not over the convolution's
//! outputs: each window adds `dy` times the input patch under its maximum. A 3×3 pool leaves a
//! ninth of the products, the unpooled gradient is never written, and no window is searched
//! again. `pool_weight_grads` makes it where nothing else reads that gradient.
//!
//! Generated code runs one task per plane of the pooled tensor, in memory order, accumulating
//! blocks of its channel's weights in registers over the plane's windows; the planes' shares
//! then add up image by image, so the result does not depend on the thread count. The
//! convolution must not be padded: every patch then lies inside its image.

use super::{arity, conv, layout, ConvAttrs};
use crate::codegen::emit::{Emitter, F32, F32X4, LANES};
use crate::codegen::gemm::IndexMath;
use crate::codegen::{KernelSink, Operand};
use crate::interp::Tensor;
use crate::ir::Shape;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// At most this many f32 or f32x4 accumulators are live at once: a block of a channel's weights.
const ACCUMULATORS: usize = 12;

/// `(x [N,C,H,W], indices [N,O,PH,PW], dy [N,O,PH,PW]) -> dw [O,C/g,kh,kw]`.
pub fn shape(
    conv_attrs: &ConvAttrs,
    kernel: [usize; 2],
    inputs: &[&Shape],
) -> Result<Shape, String> {
    arity(inputs, 3)?;
    if conv_attrs.pad != [0; 4] {
        return Err("the convolution must not be padded".into());
    }
    let (x, indices, dy) = (inputs[0], inputs[1], inputs[2]);
    let p = convolution_output(conv_attrs, kernel, x, dy)?;
    if indices != dy {
        return Err(format!("indices {indices:?} are not dy's shape {dy:?}"));
    }
    if dy[0] != p[0] {
        return Err(format!("dy {dy:?} is not a batch of {} planes", p[0]));
    }
    conv::weight_grad_shape(conv_attrs, kernel, &[x, &p])
}

/// The shape of the convolution's output, whose planes the indices point into: x's convolution
/// by a kernel with as many outputs as dy has channels.
fn convolution_output(
    conv_attrs: &ConvAttrs,
    kernel: [usize; 2],
    x: &Shape,
    dy: &Shape,
) -> Result<Shape, String> {
    let (&[_, c, ..], &[_, o, _, _]) = (x.as_slice(), dy.as_slice()) else {
        return Err("expected x [N,C,H,W] and dy [N,O,PH,PW]".into());
    };
    let groups = conv_attrs.groups.max(1);
    let w = vec![o, c / groups, kernel[0], kernel[1]];
    conv::shape(conv_attrs, &[x, &w])
}

/// `conv2d_weight_grad(x, g)`, `g` being dy placed at the indices in zeroed planes.
pub fn eval(conv_attrs: &ConvAttrs, kernel: [usize; 2], inputs: &[&Tensor]) -> Tensor {
    let (x, indices, dy) = (inputs[0], inputs[1], inputs[2]);
    let p =
        convolution_output(conv_attrs, kernel, &x.shape, &dy.shape).expect("verified shapes fit");
    let (plane, pooled_plane) = (p[2] * p[3], dy.shape[2] * dy.shape[3]);
    let mut unpooled = vec![0.0; p.iter().product()];
    for (k, (&index, &grad)) in indices.data.iter().zip(&dy.data).enumerate() {
        if index >= 0.0 {
            unpooled[k / pooled_plane * plane + index as usize] += grad;
        }
    }
    conv::eval_weight_grad(conv_attrs, kernel, &[x, &Tensor::new(p, unpooled)])
}

/// Whether a channel's weights `[group_channels, kh, kw]` (with this dilation) fit the
/// registers the generated code accumulates in, so that it searches each window once.
pub fn fits_registers(group_channels: usize, kernel: [usize; 2], dilation: [usize; 2]) -> bool {
    group_channels * kernel[0] * row_pieces(kernel[1], dilation[1] as i64).len() <= ACCUMULATORS
}

/// A run of weights accumulated in one register: `LANES` of them (F32X4) or one (F32), at
/// `weight` within the channel's weights and `x` from the patch's first cell.
struct Piece {
    weight: i64,
    x: i64,
    ty: Type,
}

pub fn emit(conv_attrs: &ConvAttrs, sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    let (x, indices, dy) = (&inputs[0], &inputs[1], &inputs[2]);
    let &[images, channels, height, width] = x.shape.as_slice() else {
        unreachable!("verified shapes are 4-D")
    };
    let &[outputs, group_channels, kh, kw] = output.shape.as_slice() else {
        unreachable!("verified shapes are 4-D")
    };
    let p =
        convolution_output(conv_attrs, [kh, kw], &x.shape, &dy.shape).expect("verified shapes fit");
    let per_group = outputs / conv_attrs.groups;
    let [sh, sw] = conv_attrs.stride.map(|s| s as i64);
    let [dh, dw] = conv_attrs.dilation.map(|d| d as i64);
    let (plane, width) = ((height * width) as i64, width as i64);
    let pieces = pieces(group_channels, [kh, kw], [dh, dw], plane, width);
    let patch = output.len() / outputs;
    let p_width = p[3];
    let pooled_plane = (dy.shape[2] * dy.shape[3]) as i64;
    // Each plane's share of its channel's weights, summed over the images afterwards (in image
    // order, whatever the thread count).
    let staged = (images > 1).then(|| sink.workspace(images * output.len()));
    let slots = [x.slot, indices.slot, dy.slot, staged.unwrap_or(output.slot)];
    // Tasks: the planes of dy, in memory order.
    sink.kernel(images * outputs, 0, |e| {
        let [x, indices, dy, shares] = slots.map(|slot| e.buffer(slot));
        let (begin, end) = (e.begin(), e.end());
        e.for_loop(begin, end, 1, |e, task| {
            let [image, channel] = e.decode(task, &[images, outputs])[..] else {
                unreachable!("two coordinates")
            };
            let group = e.div_imm(channel, per_group as i64);
            let first_channel = e.mul_imm(group, group_channels as i64);
            let x_plane = e.mul_imm(image, channels as i64);
            let x_plane = e.add(x_plane, first_channel);
            let x_plane = e.mul_imm(x_plane, plane);
            let y_plane = e.mul_imm(task, pooled_plane);
            let share = e.mul_imm(task, patch as i64);
            for block in pieces.chunks(ACCUMULATORS) {
                let accumulators: Vec<_> = block
                    .iter()
                    .map(|piece| {
                        let zero = e.constant(piece.ty, 0.0);
                        e.variable(piece.ty, zero)
                    })
                    .collect();
                let (first, last) = (e.int(0), e.int(pooled_plane));
                e.for_loop(first, last, 1, |e, window| {
                    let y = e.add(y_plane, window);
                    let index = e.load(F32, Emitter::frozen(), indices, y, 0);
                    // A window with no cell (index -1) adds nothing, at the plane's first patch.
                    let grad = e.load(F32, Emitter::frozen(), dy, y, 0);
                    let zero = e.float(0.0);
                    let grad = e.select_cmp(FloatCC::LessThan, index, zero, zero, grad);
                    let index = e.select_cmp(FloatCC::LessThan, index, zero, zero, index);
                    let start = patch_start(e, index, p_width, [sh, sw], width);
                    let start = e.add(x_plane, start);
                    let wide_grad = e.splat(F32X4, grad);
                    for (piece, &acc) in block.iter().zip(&accumulators) {
                        let cells = e.load(piece.ty, Emitter::frozen(), x, start, piece.x);
                        let grad = if piece.ty == F32 { grad } else { wide_grad };
                        let product = e.b.ins().fmul(cells, grad);
                        let old = e.get(acc);
                        let new = e.b.ins().fadd(old, product);
                        e.set(acc, new);
                    }
                });
                for (piece, &acc) in block.iter().zip(&accumulators) {
                    let value = e.get(acc);
                    e.store(Emitter::mutable(), value, shares, share, piece.weight);
                }
            }
        });
    });
    if let Some(staged) = staged {
        let shape = [images].iter().chain(&output.shape).copied().collect();
        let shares = Operand {
            slot: staged,
            shape,
        };
        layout::emit_sum_to(sink, &[shares], output);
    }
}

/// Where, from its image's plane, the patch of the convolution output at `index` (a
/// non-negative float, `row · p_width + column`) starts: `(row · sh, column · sw)`, the
/// convolution being unpadded.
fn patch_start(
    e: &mut Emitter,
    index: Value,
    p_width: usize,
    [sh, sw]: [i64; 2],
    width: i64,
) -> Value {
    let index = e.b.ins().fcvt_to_sint_sat(I64, index);
    let row = e.div_imm(index, p_width as i64);
    let column = e.rem_imm(index, p_width as i64);
    let down = e.mul_imm(row, sh * width);
    let across = e.mul_imm(column, sw);
    e.add(down, across)
}

/// A channel's weights `[C/g, kh, kw]` as accumulator pieces, kernel row by kernel row.
fn pieces(
    group_channels: usize,
    [kh, kw]: [usize; 2],
    [dh, dw]: [i64; 2],
    plane: i64,
    width: i64,
) -> Vec<Piece> {
    let mut pieces = Vec::new();
    for c in 0..group_channels {
        for r in 0..kh {
            let weight = ((c * kh + r) * kw) as i64;
            let x = c as i64 * plane + r as i64 * dh * width;
            pieces.extend(row_pieces(kw, dw).into_iter().map(|(k, ty)| Piece {
                weight: weight + k,
                x: x + k * dw,
                ty,
            }));
        }
    }
    pieces
}

/// A kernel row of `kw` taps as pieces `(first tap, type)`: f32x4 runs then single taps where
/// the taps are adjacent in the image (`dilation` 1), else single taps.
fn row_pieces(kw: usize, dilation: i64) -> Vec<(i64, Type)> {
    let lanes = LANES as usize;
    let vectors = if dilation == 1 { kw / lanes * lanes } else { 0 };
    let runs = (0..vectors).step_by(lanes).map(|k| (k as i64, F32X4));
    runs.chain((vectors..kw).map(|k| (k as i64, F32))).collect()
}
