//! The verifier: checks the invariants every stage's graph must hold, and reports every
//! violation it finds, each naming what it is about (`%12 = conv2d: ...`, `input %3 (x): ...`,
//! `output gradient conv1.weight: ...`). The invariants:
//!
//! - **Names.** The graph's name, input and output names and layer names are dotted names
//!   (letters, digits, `_`, `.`), so the text form can spell them.
//! - **SSA.** Each value is defined exactly once: by an input (`Definition::Input`), or by the
//!   op its `Definition::Op` names, whose `output` is that value; and each op's output is a
//!   value defined by that op.
//! - **Order.** Ops appear in the order of their outputs, and every input of an op exists and
//!   is defined before the op's output (has a smaller index). Inputs need not come first:
//!   building interleaves them with ops, and `prune` puts them first.
//! - **Shapes and arity.** Each op's shape rule accepts its inputs' shapes, which includes
//!   their number (the rule is where each op's arity lives), and gives the output's shape.
//! - **Inputs.** Input names are unique; `scalar` inputs are scalars (`[]`).
//! - **Outputs.** Each output's value exists; no two outputs share a role and a name; the
//!   `loss` is a scalar; a `gradient` names a `param` input and has its shape; an `update`
//!   names a `param` or `state` input and has its shape.
//! - **Element type.** Every tensor is f32, the IR's only element type; there is no type to
//!   check.

use super::parse::is_name;
use super::print::ShapeText;
use super::{Definition, Graph, Input, InputKind, Op, Output, OutputRole, Shape, ValueId};

/// Checks `graph`'s invariants (see the module comment), returning every violation.
pub fn verify(graph: &Graph) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    if !is_name(&graph.name) {
        problems.push(format!(
            "the graph's name `{}` is not a dotted name",
            graph.name
        ));
    }
    for (index, value) in graph.values.iter().enumerate() {
        let id = ValueId(index);
        let problem = match &value.definition {
            Definition::Input(input) => check_input(graph, id, input, &value.shape)
                .map_err(|problem| format!("input {id} ({}): {problem}", input.name)),
            Definition::Op(op_index) => check_op_definition(graph, id, *op_index),
        };
        problems.extend(problem.err());
    }
    for (op_index, op) in graph.ops.iter().enumerate() {
        let previous = op_index.checked_sub(1).map(|i| &graph.ops[i]);
        problems.extend(
            check_op(graph, op_index, op, previous)
                .into_iter()
                .map(|problem| format!("{} = {}: {problem}", op.output, op.kind.name())),
        );
    }
    for (index, output) in graph.outputs.iter().enumerate() {
        let earlier = &graph.outputs[..index];
        problems.extend(check_output(graph, earlier, output).err());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Checks input `id` of `graph` (or, while parsing, the next value), whose name must be new.
pub(crate) fn check_input(
    graph: &Graph,
    id: ValueId,
    input: &Input,
    shape: &Shape,
) -> Result<(), String> {
    if !is_name(&input.name) {
        return Err(format!("`{}` is not a dotted name", input.name));
    }
    if let Some(first) = graph.find_input(&input.name).filter(|&first| first != id) {
        return Err(format!("`{}` already names input {first}", input.name));
    }
    if input.kind == InputKind::Scalar && !shape.is_empty() {
        return Err(format!(
            "a scalar input has shape [], not {}",
            ShapeText(shape)
        ));
    }
    Ok(())
}

/// Checks that value `id`, defined by op `op_index`, is that op's output.
fn check_op_definition(graph: &Graph, id: ValueId, op_index: usize) -> Result<(), String> {
    match graph.ops.get(op_index) {
        None => Err(format!(
            "{id} is defined by op {op_index}, but the graph has {} ops",
            graph.ops.len()
        )),
        Some(op) if op.output != id => Err(format!(
            "{id} is defined by op {op_index}, `{} = {}`, whose output is {}",
            op.output,
            op.kind.name(),
            op.output
        )),
        Some(_) => Ok(()),
    }
}

/// The problems of op `op_index`, which comes after `previous`.
fn check_op(graph: &Graph, op_index: usize, op: &Op, previous: Option<&Op>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(layer) = op.layer.as_ref().filter(|layer| !is_name(layer)) {
        problems.push(format!("the layer `{layer}` is not a dotted name"));
    }
    let output = graph.values.get(op.output.0);
    match output.map(|value| &value.definition) {
        None => problems.push(format!(
            "its output is not a value (the graph has {})",
            graph.values.len()
        )),
        Some(Definition::Op(defining)) if *defining == op_index => {}
        Some(Definition::Op(defining)) => problems.push(format!(
            "its output is defined by op {defining}, not by this op ({op_index})"
        )),
        Some(Definition::Input(input)) => problems.push(format!(
            "its output is the input `{}`, not this op's result",
            input.name
        )),
    }
    if let Some(previous) = previous.filter(|previous| previous.output >= op.output) {
        problems.push(format!(
            "it comes after the op defining {}: ops must be in value order",
            previous.output
        ));
    }
    let mut input_shapes = Vec::new();
    for &input in &op.inputs {
        if input.0 >= graph.values.len() {
            problems.push(format!("its input {input} does not exist"));
        } else if input >= op.output {
            problems.push(format!("its input {input} is used before its definition"));
        } else {
            input_shapes.push(graph.shape(input));
        }
    }
    // The shape rule needs every input's shape and the output's; a missing one is reported.
    if let Some(output) = output.filter(|_| input_shapes.len() == op.inputs.len()) {
        match op.kind.shape(&input_shapes) {
            Err(problem) => problems.push(problem),
            Ok(shape) if shape != output.shape => problems.push(format!(
                "its output has shape {}, but its shape rule gives {}",
                ShapeText(&output.shape),
                ShapeText(&shape)
            )),
            Ok(_) => {}
        }
    }
    problems
}

/// Checks an output of `graph` against the outputs listed before it, `earlier`.
pub(crate) fn check_output(
    graph: &Graph,
    earlier: &[Output],
    output: &Output,
) -> Result<(), String> {
    let role = output.role.keyword();
    let fail = |problem: String| Err(format!("output {role} {}: {problem}", output.name));
    if !is_name(&output.name) {
        return fail("its name is not a dotted name".into());
    }
    if earlier
        .iter()
        .any(|o| o.role == output.role && o.name == output.name)
    {
        return fail("listed twice".into());
    }
    let Some(value) = graph.values.get(output.value.0) else {
        return fail(format!("{} is not a value", output.value));
    };
    let shape = &value.shape;
    let allowed_inputs: &[InputKind] = match output.role {
        OutputRole::Loss if !shape.is_empty() => {
            return fail(format!("a loss is a scalar, not {}", ShapeText(shape)))
        }
        OutputRole::Loss | OutputRole::Prediction => return Ok(()),
        OutputRole::Gradient => &[InputKind::Param],
        OutputRole::Update => &[InputKind::Param, InputKind::State],
    };
    let input = graph.inputs().find(|(_, input)| input.name == output.name);
    match input {
        Some((id, input)) if allowed_inputs.contains(&input.kind) => {
            let input_shape = graph.shape(id);
            if input_shape == shape {
                Ok(())
            } else {
                fail(format!(
                    "{} has shape {}, but {} `{}` has {}",
                    output.value,
                    ShapeText(shape),
                    input.kind.keyword(),
                    input.name,
                    ShapeText(input_shape)
                ))
            }
        }
        _ => {
            let kinds: Vec<&str> = allowed_inputs.iter().map(|k| k.keyword()).collect();
            fail(format!(
                "no {} input is named `{}`",
                kinds.join(" or "),
                output.name
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::verify;
    use crate::ir::print::examples::{every_op, tiny};
    use crate::ir::{Definition, Graph, Input, InputKind, OutputRole, ValueId};

    #[test]
    fn accepts_well_formed_graphs() {
        assert_eq!(verify(&tiny()), Ok(()));
        assert_eq!(verify(&every_op()), Ok(()));
    }

    /// What `verify` reports about `tiny()` after `corrupt`:
    ///
    /// ```text
    /// %0 = data x : [2,1,4,4]               %5 = leaky_relu(%4) : [2,3,2,2]    op 1
    /// %1 = target labels : [2]              %6 = reshape(%5) : [2,12]          op 2
    /// %2 = param conv1.weight : [3,1,3,3]   %7 = softmax_cross_entropy(%6, %1) op 3
    /// %3 = scalar lr : []                   %8 = mul(%2, %3) : [3,1,3,3]       op 4
    /// %4 = conv2d(%0, %2) : [2,3,2,2] op 0  outputs: loss %7, prediction %6, update %8
    /// ```
    fn problems(corrupt: impl FnOnce(&mut Graph)) -> Vec<String> {
        let mut graph = tiny();
        corrupt(&mut graph);
        verify(&graph).expect_err("the corrupt graph verifies")
    }

    #[test]
    fn rejects_use_before_definition() {
        assert_eq!(
            problems(|g| g.ops[0].inputs[0] = ValueId(5)),
            ["%4 = conv2d: its input %5 is used before its definition"]
        );
        assert_eq!(
            problems(|g| g.ops[4].inputs[1] = ValueId(99)),
            ["%8 = mul: its input %99 does not exist"]
        );
    }

    #[test]
    fn rejects_wrong_shapes() {
        assert_eq!(
            problems(|g| g.values[8].shape = vec![3, 1, 3]),
            [
                "%8 = mul: its output has shape [3,1,3], but its shape rule gives [3,1,3,3]",
                "output update conv1.weight: %8 has shape [3,1,3], but param `conv1.weight` has \
                 [3,1,3,3]",
            ]
        );
        assert_eq!(
            problems(|g| g.values[2].shape = vec![3, 2, 3, 3]),
            [
                "%4 = conv2d: weight [3, 2, 3, 3] does not fit 1 input channels in 1 groups",
                "%8 = mul: its output has shape [3,1,3,3], but its shape rule gives [3,2,3,3]",
                "output update conv1.weight: %8 has shape [3,1,3,3], but param `conv1.weight` has \
                 [3,2,3,3]",
            ]
        );
    }

    #[test]
    fn rejects_wrong_arity() {
        assert_eq!(
            problems(|g| {
                g.ops[0].inputs.pop();
            }),
            ["%4 = conv2d: expected 2 inputs, found 1"]
        );
        assert_eq!(
            problems(|g| g.ops[1].inputs.push(ValueId(0))),
            ["%5 = leaky_relu: expected 1 inputs, found 2"]
        );
    }

    #[test]
    fn rejects_duplicate_and_misshapen_inputs() {
        assert_eq!(
            problems(|g| {
                g.values[1].definition = Definition::Input(Input {
                    kind: InputKind::Target,
                    name: "x".into(),
                })
            }),
            ["input %1 (x): `x` already names input %0"]
        );
        assert_eq!(
            problems(|g| g.values[3].shape = vec![1]),
            ["input %3 (lr): a scalar input has shape [], not [1]"]
        );
    }

    #[test]
    fn rejects_broken_ssa() {
        // Two ops defining %4: the second's output is not its own.
        assert_eq!(
            problems(|g| g.ops[1].output = ValueId(4)),
            [
                "%5 is defined by op 1, `%4 = leaky_relu`, whose output is %4",
                "%4 = leaky_relu: its output is defined by op 0, not by this op (1)",
                "%4 = leaky_relu: it comes after the op defining %4: ops must be in value order",
                "%4 = leaky_relu: its input %4 is used before its definition",
            ]
        );
        assert_eq!(
            problems(|g| g.values[5].definition = Definition::Op(9)),
            [
                "%5 is defined by op 9, but the graph has 5 ops",
                "%5 = leaky_relu: its output is defined by op 9, not by this op (1)",
            ]
        );
        assert_eq!(
            problems(|g| g.ops[4].output = ValueId(3)),
            [
                "%8 is defined by op 4, `%3 = mul`, whose output is %3",
                "%3 = mul: its output is the input `lr`, not this op's result",
                "%3 = mul: it comes after the op defining %7: ops must be in value order",
                "%3 = mul: its input %3 is used before its definition",
            ]
        );
    }

    #[test]
    fn rejects_ops_out_of_value_order() {
        // The update's op moved first, its definition kept pointing at it.
        assert_eq!(
            problems(|g| {
                let update = g.ops.remove(4);
                g.ops.insert(0, update);
                for (index, op) in g.ops.iter().enumerate() {
                    g.values[op.output.0].definition = Definition::Op(index);
                }
            }),
            ["%4 = conv2d: it comes after the op defining %8: ops must be in value order"]
        );
    }

    #[test]
    fn rejects_bad_outputs() {
        let cases = [
            (
                OutputRole::Loss,
                "loss",
                7,
                "output loss loss: listed twice",
            ),
            (
                OutputRole::Prediction,
                "y",
                42,
                "output prediction y: %42 is not a value",
            ),
            (
                OutputRole::Loss,
                "other",
                6,
                "output loss other: a loss is a scalar, not [2,12]",
            ),
            (
                OutputRole::Gradient,
                "x",
                0,
                "output gradient x: no param input is named `x`",
            ),
            (
                OutputRole::Update,
                "lr",
                3,
                "output update lr: no param or state input is named `lr`",
            ),
            (
                OutputRole::Gradient,
                "conv1.weight",
                4,
                "output gradient conv1.weight: %4 has shape [2,3,2,2], but param `conv1.weight` \
                 has [3,1,3,3]",
            ),
            (
                OutputRole::Prediction,
                "a b",
                6,
                "output prediction a b: its name is not a dotted name",
            ),
        ];
        for (role, name, value, expected) in cases {
            assert_eq!(
                problems(|g| g.output(role, name, ValueId(value))),
                [expected]
            );
        }
    }

    #[test]
    fn rejects_names_the_text_form_cannot_spell() {
        assert_eq!(
            problems(|g| {
                g.name = "tiny training".into();
                g.ops[0].layer = Some("conv(1)".into());
            }),
            [
                "the graph's name `tiny training` is not a dotted name",
                "%4 = conv2d: the layer `conv(1)` is not a dotted name",
            ]
        );
    }

    #[test]
    fn reports_every_problem() {
        let found = problems(|g| {
            g.ops[0].inputs.pop();
            g.ops[2].inputs[0] = ValueId(6);
            g.outputs[1].value = ValueId(10);
        });
        assert_eq!(
            found,
            [
                "%4 = conv2d: expected 2 inputs, found 1",
                "%6 = reshape: its input %6 is used before its definition",
                "output prediction prediction: %10 is not a value",
            ]
        );
    }
}
