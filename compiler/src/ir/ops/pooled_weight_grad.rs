//! `pooled_conv2d_weight_grad`: the weight gradient of a convolution whose output is max-pooled,
//! from the pooled gradient. Max pooling's gradient is dy at each window's first maximum and
//! zero elsewhere, so the weight gradient is a sum over windows, not over the convolution's
//! outputs: each window adds `dy` times the input patch under its maximum. A 3×3 pool leaves a
//! ninth of the products, and the unpooled gradient is never written. `pool_weight_grads` makes
//! it where nothing else reads that gradient.
//!
//! Generated code runs one task per plane of the pooled tensor, in memory order, accumulating
//! blocks of its channel's weights in registers over the plane's windows; the planes' shares
//! then add up image by image, so the result does not depend on the thread count. The
//! convolution must not be padded: every patch then lies inside its image.

use super::pool::{first_max_position_by_rows, Geometry};
use super::{arity, conv, layout, pool, ConvAttrs, PoolAttrs};
use crate::codegen::emit::{Emitter, F32, F32X4, LANES};
use crate::codegen::gemm::IndexMath;
use crate::codegen::{KernelSink, Operand};
use crate::interp::Tensor;
use crate::ir::Shape;
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// At most this many f32 or f32x4 accumulators are live at once: a block of a channel's weights.
const ACCUMULATORS: usize = 12;

/// `(x [N,C,H,W], p [N,O,OH,OW], dy [N,O,PH,PW]) -> dw [O,C/g,kh,kw]`, `p` being the
/// convolution's output (what the pool reads) and `dy` the pool's output gradient.
pub fn shape(
    conv_attrs: &ConvAttrs,
    kernel: [usize; 2],
    pool_attrs: &PoolAttrs,
    inputs: &[&Shape],
) -> Result<Shape, String> {
    arity(inputs, 3)?;
    if conv_attrs.pad != [0; 4] {
        return Err("the convolution must not be padded".into());
    }
    let dw = conv::weight_grad_shape(conv_attrs, kernel, &[inputs[0], inputs[1]])?;
    let pooled = pool::shape(pool_attrs, &[inputs[1]])?;
    if *inputs[2] != pooled {
        return Err(format!(
            "dy {:?} is not the pooled shape {pooled:?} of {:?}",
            inputs[2], inputs[1]
        ));
    }
    Ok(dw)
}

/// `conv2d_weight_grad(x, maxpool_grad(p, dy))`, as the two reference ops compute it.
pub fn eval(
    conv_attrs: &ConvAttrs,
    kernel: [usize; 2],
    pool_attrs: &PoolAttrs,
    inputs: &[&Tensor],
) -> Tensor {
    let (x, p, dy) = (inputs[0], inputs[1], inputs[2]);
    let unpooled = pool::eval_max_grad(pool_attrs, &[p, dy]);
    conv::eval_weight_grad(conv_attrs, kernel, &[x, &unpooled])
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

pub fn emit(
    conv_attrs: &ConvAttrs,
    pool_attrs: &PoolAttrs,
    sink: &mut KernelSink,
    inputs: &[Operand],
    output: &Operand,
) {
    let (x, p) = (&inputs[0], &inputs[1]);
    let &[images, channels, height, width] = x.shape.as_slice() else {
        unreachable!("verified shapes are 4-D")
    };
    let &[outputs, group_channels, kh, kw] = output.shape.as_slice() else {
        unreachable!("verified shapes are 4-D")
    };
    let per_group = outputs / conv_attrs.groups;
    let geometry = Geometry::new(pool_attrs, &p.shape);
    let [sh, sw] = conv_attrs.stride.map(|s| s as i64);
    let [dh, dw] = conv_attrs.dilation.map(|d| d as i64);
    let (plane, width) = ((height * width) as i64, width as i64);
    let pieces = pieces(group_channels, [kh, kw], [dh, dw], plane, width);
    let patch = output.len() / outputs;
    let pooled_input_plane = (geometry.height * geometry.width) as i64;
    let pooled_plane = (geometry.out_height * geometry.out_width) as i64;
    // Each plane's share of its channel's weights, summed over the images afterwards (in image
    // order, whatever the thread count).
    let staged = (images > 1).then(|| sink.workspace(images * output.len()));
    let slots = [
        x.slot,
        p.slot,
        inputs[2].slot,
        staged.unwrap_or(output.slot),
    ];
    // Tasks: the planes of p, in memory order.
    sink.kernel(images * outputs, 0, |e| {
        let [x, p, dy, shares] = slots.map(|slot| e.buffer(slot));
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
            let p_plane = e.mul_imm(task, pooled_input_plane);
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
                let mut visit = |e: &mut Emitter, window: &pool::Window, ty: Type| {
                    debug_assert_eq!(ty, F32, "windows go one at a time");
                    if window.is_empty() {
                        return;
                    }
                    // The patch of the convolution output at (row, col) starts at
                    // (row · sh, col · sw) in the image: the convolution is not padded.
                    let mut patch_at = |e: &mut Emitter, row: Value, col: Value| {
                        let down = e.b.ins().imul_imm_s(row, sh * width);
                        let across = e.b.ins().imul_imm_s(col, sw);
                        e.b.ins().iadd(down, across)
                    };
                    let window_patch = patch_at(e, window.row, window.col);
                    let at =
                        first_max_position_by_rows(e, p, window, geometry.width, &mut patch_at);
                    let start = e.b.ins().iadd(x_plane, window_patch);
                    let start = e.b.ins().iadd(start, at);
                    let grad = e.load(F32, Emitter::frozen(), dy, window.y, 0);
                    let wide_grad = e.splat(F32X4, grad);
                    for (piece, &acc) in block.iter().zip(&accumulators) {
                        let cells = e.load(piece.ty, Emitter::frozen(), x, start, piece.x);
                        let grad = if piece.ty == F32 { grad } else { wide_grad };
                        let product = e.b.ins().fmul(cells, grad);
                        let old = e.get(acc);
                        let new = e.b.ins().fadd(old, product);
                        e.set(acc, new);
                    }
                };
                geometry.for_each_window(e, p_plane, y_plane, 0, &mut visit);
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
