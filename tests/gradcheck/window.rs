//! Gradient checks of the `window` primitives (see `gradcheck/mod.rs`), and the window's values
//! at the channel edges.

use super::{check_vjp, random_tensor};
use netc::interp::{EvalContext, Tensor};
use netc::ir::OpKind;
use proptest::prelude::*;

#[test]
fn channel_window_sum_stops_at_the_edges() {
    // Four channels of one pixel each, then the same on a second pixel scaled by 10.
    let x = Tensor::new(
        vec![1, 4, 1, 2],
        vec![1.0, 10.0, 2.0, 20.0, 4.0, 40.0, 8.0, 80.0],
    );
    let sum = |size| OpKind::ChannelWindowSum { size }.eval(&[&x], &EvalContext::default());
    assert_eq!(sum(1), x);
    let three = [3.0, 7.0, 14.0, 12.0];
    let expected: Vec<f64> = three.iter().flat_map(|&v| [v, 10.0 * v]).collect();
    assert_eq!(sum(3), Tensor::new(vec![1, 4, 1, 2], expected));
    // Wider than the channels: every output is the sum of all of them.
    assert_eq!(
        sum(9),
        Tensor::new(vec![1, 4, 1, 2], [15.0, 150.0].repeat(4))
    );
}

proptest! {
    #![proptest_config(super::config())]

    #[test]
    fn channel_window_sum_gradients(
        shape in prop::array::uniform4(1..=4usize),
        half in 0..=3usize,
        seed in any::<u64>(),
    ) {
        let kind = OpKind::ChannelWindowSum { size: 2 * half + 1 };
        check_vjp(kind, vec![random_tensor(shape.to_vec(), seed, -1.0, 1.0)], &[true], seed);
    }
}
