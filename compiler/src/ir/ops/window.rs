//! The sum over a window of neighbouring channels, local response normalization's core.
//! For an odd window centred on each channel the op is its own adjoint.

use super::{arity, OpKind};
use crate::interp::Tensor;
use crate::ir::{Graph, Op, Shape, ValueId};

pub fn shape(size: usize, inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 1)?;
    if size % 2 == 0 {
        return Err(format!("window size {size} is not odd"));
    }
    if inputs[0].len() != 4 {
        return Err("expected x [N,C,H,W]".into());
    }
    Ok(inputs[0].clone())
}

pub fn eval(size: usize, inputs: &[&Tensor]) -> Tensor {
    let x = inputs[0];
    let &[n, c, h, w] = x.shape.as_slice() else {
        unreachable!("verified shapes are 4-D")
    };
    let (half, plane) = (size / 2, h * w);
    let mut y = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            let window = ch.saturating_sub(half)..(ch + half + 1).min(c);
            for k in 0..plane {
                y[(b * c + ch) * plane + k] = window
                    .clone()
                    .map(|cw| x.data[(b * c + cw) * plane + k])
                    .sum();
            }
        }
    }
    Tensor::new(x.shape.clone(), y)
}

pub fn vjp(size: usize, op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let dx = graph.op(
        OpKind::ChannelWindowSum { size },
        &[grad],
        op.layer.as_deref(),
    );
    vec![Some(dx)]
}

// CODEGEN-STUB: replaced by the real code-generation rules.
pub fn emit(
    size: usize,
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (size, sink, inputs, output);
    panic!("internal error: no code generation for `emit` yet");
}
