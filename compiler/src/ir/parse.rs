//! The IR's text form (see `print`), read back into a graph: the pest grammar `ir.pest`, then
//! the checks that make the text a graph. Values are numbered `%0, %1, ...` in order; input
//! kinds, op names and output roles are known words; each op has exactly its attributes, in the
//! printed order, each of the right form; every argument is defined before its use; the shape
//! after an op's `:` is the one its shape rule gives; and each input and output passes the
//! verifier's checks on it. So whatever parses, verifies.
//!
//! Errors give the line and column. No text makes the parser panic: besides the checks above,
//! integers are bounded (`MAX_INTEGER`) and shapes' element counts fit in a `usize`, so the
//! shape rules' arithmetic cannot overflow.

use super::ops::fused::{may_be_step, Arg, Chain, Step};
use super::ops::{ConvAttrs, MapFn, OpKind, PoolAttrs};
use super::print::{attributes, Attribute, ShapeText};
use super::verify::{check_input, check_output};
use super::{Graph, Input, InputKind, Output, OutputRole, Shape, ValueId};
use netc_grammar::diagnostic::nearest;
use pest::error::LineColLocation;
use pest::iterators::Pair;
use pest::Parser as _;
use pest_derive::Parser;
use std::fmt;

#[derive(Parser)]
#[grammar = "ir/ir.pest"]
struct IrParser;

/// The largest extent or integer attribute the parser accepts (2^31 - 1). The shape rules add a
/// few such numbers or multiply two (a padded extent, a dilated kernel, a window's start), which
/// then stays far inside a 64-bit `usize`; real networks are nowhere near the bound.
pub const MAX_INTEGER: usize = (1 << 31) - 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for ParseError {}

pub fn parse(text: &str) -> Result<Graph, ParseError> {
    let graph_pair = IrParser::parse(Rule::graph, text)
        .map_err(syntax_error)?
        .next()
        .expect("the `graph` rule yields one pair");
    let mut graph = Graph::default();
    for item in graph_pair.into_inner() {
        match item.as_rule() {
            Rule::name => graph.name = item.as_str().to_string(),
            Rule::input => read_input(&mut graph, item)?,
            Rule::op => read_op(&mut graph, item)?,
            Rule::output => read_output(&mut graph, item)?,
            Rule::graph_keyword | Rule::graph_start | Rule::graph_end | Rule::EOI => {}
            rule => unreachable!("the grammar puts no {rule:?} in a graph"),
        }
    }
    Ok(graph)
}

/// Whether `text` is a dotted name (letters, digits, `_` and `.`), which the text form can
/// spell as a graph, input, output or layer name.
pub fn is_name(text: &str) -> bool {
    IrParser::parse(Rule::name, text).is_ok_and(|pairs| pairs.as_str() == text)
}

fn syntax_error(error: pest::error::Error<Rule>) -> ParseError {
    let error = error.renamed_rules(|rule| describe(*rule).to_string());
    let (LineColLocation::Pos((line, column)) | LineColLocation::Span((line, column), _)) =
        error.line_col;
    ParseError {
        line,
        column,
        message: error.variant.message().into_owned(),
    }
}

/// A rule as syntax errors name it ("expected a value like `%3`").
fn describe(rule: Rule) -> &'static str {
    match rule {
        Rule::EOI => "the end of the text",
        Rule::WHITESPACE => "whitespace",
        Rule::graph | Rule::graph_keyword => "`graph`",
        Rule::graph_start => "`{`",
        Rule::graph_end => "`}`",
        Rule::input => "an input like `%0 = data x : [2,3]`",
        Rule::op => "an op like `%3 = relu(%2) : [2,3]`",
        Rule::arguments => "arguments like `(%1, %2)`",
        Rule::arguments_end => "`)`",
        Rule::attribute => "an attribute like `axis=1`",
        Rule::layer => "a layer like `@conv1`",
        Rule::output | Rule::output_keyword => "an output like `output loss loss = %9`",
        Rule::value => "a value like `%3`",
        Rule::shape => "a shape like `[2,3]`",
        Rule::pair => "a pair like `2x2`",
        Rule::sides => "four sides like `0,0,1,1`",
        Rule::flag => "`true` or `false`",
        Rule::number => "a number",
        Rule::uint => "a whole number",
        Rule::word => "a word such as an op or attribute name",
        Rule::name | Rule::name_char => "a dotted name like `conv1.weight`",
        Rule::chain | Rule::chain_step => "steps like `{mul(x0, x1); relu(t0)}`",
        Rule::chain_arg => "a step argument like `x0` (an input) or `t1` (a step)",
        Rule::chain_results => "a chain's results like `-> t1, t2`",
        Rule::step_attribute => "a step attribute like `value=0.5` or `shape=[1,8,1,1]`",
    }
}

fn error_at(pair: &Pair<Rule>, message: impl Into<String>) -> ParseError {
    let (line, column) = pair.line_col();
    ParseError {
        line,
        column,
        message: message.into(),
    }
}

/// The parts of a line whose rule fixes how many it has.
fn parts<const N: usize>(line: Pair<'_, Rule>) -> [Pair<'_, Rule>; N] {
    let parts: Vec<_> = line.into_inner().collect();
    parts
        .try_into()
        .unwrap_or_else(|parts: Vec<_>| unreachable!("{} parts, not {N}", parts.len()))
}

/// Checks that the `%N` a line defines is the next value.
fn check_defined_id(graph: &Graph, id: &Pair<Rule>) -> Result<(), ParseError> {
    let next = ValueId(graph.values.len());
    if id.as_str() == next.to_string() {
        Ok(())
    } else {
        Err(error_at(
            id,
            format!("expected {next}: values are numbered in order from %0"),
        ))
    }
}

/// The value a `%N` names, which must be defined by an earlier line.
fn read_use(graph: &Graph, id: &Pair<Rule>) -> Result<ValueId, ParseError> {
    match id.as_str()[1..].parse() {
        Ok(index) if index < graph.values.len() => Ok(ValueId(index)),
        _ => Err(error_at(
            id,
            format!("{} is not defined before this line", id.as_str()),
        )),
    }
}

fn read_input(graph: &mut Graph, line: Pair<Rule>) -> Result<(), ParseError> {
    let [id, kind, name, shape] = parts(line);
    check_defined_id(graph, &id)?;
    let kind_word = kind.as_str();
    let Some(&kind) = InputKind::ALL.iter().find(|k| k.keyword() == kind_word) else {
        let kinds = InputKind::ALL.map(InputKind::keyword);
        return Err(unknown_word(&kind, "input kind", &kinds));
    };
    let input = Input {
        kind,
        name: name.as_str().to_string(),
    };
    let shape = read_shape(&shape)?;
    check_input(graph, ValueId(graph.values.len()), &input, &shape)
        .map_err(|problem| error_at(&name, problem))?;
    graph.input(input.kind, input.name, shape);
    Ok(())
}

fn read_op(graph: &mut Graph, line: Pair<Rule>) -> Result<(), ParseError> {
    let mut parts = line.into_inner();
    let (Some(id), Some(name), Some(arguments)) = (parts.next(), parts.next(), parts.next()) else {
        unreachable!("an op line has an id, a name and arguments")
    };
    check_defined_id(graph, &id)?;
    let inputs = arguments
        .into_inner()
        .filter(|part| part.as_rule() == Rule::value)
        .map(|argument| read_use(graph, &argument))
        .collect::<Result<Vec<_>, _>>()?;
    let mut attribute_pairs = Vec::new();
    let mut shape = None;
    let mut layer = None;
    for part in parts {
        match part.as_rule() {
            Rule::attribute => attribute_pairs.push(part),
            Rule::shape => shape = Some(part),
            Rule::layer => layer = Some(part.as_str()[1..].to_string()),
            rule => unreachable!("the grammar puts no {rule:?} in an op"),
        }
    }
    let shape = shape.expect("an op line has a shape");
    let kind = read_kind(&name, attribute_pairs)?;
    let printed = read_shape(&shape)?;
    let input_shapes: Vec<&Shape> = inputs.iter().map(|&v| graph.shape(v)).collect();
    let inferred = kind.shape(&input_shapes).map_err(|problem| {
        let shapes: Vec<String> = input_shapes
            .iter()
            .map(|s| ShapeText(s).to_string())
            .collect();
        error_at(
            &name,
            format!("`{}` on {}: {problem}", kind.name(), shapes.join(", ")),
        )
    })?;
    if inferred != printed {
        return Err(error_at(
            &shape,
            format!(
                "`{}` gives {} here, not {}",
                kind.name(),
                ShapeText(&inferred),
                ShapeText(&printed)
            ),
        ));
    }
    graph.op(kind, &inputs, layer.as_deref());
    Ok(())
}

fn read_output(graph: &mut Graph, line: Pair<Rule>) -> Result<(), ParseError> {
    let [_keyword, role, name, value] = parts(line);
    let role_word = role.as_str();
    let Some(&role) = OutputRole::ALL.iter().find(|r| r.keyword() == role_word) else {
        let roles = OutputRole::ALL.map(OutputRole::keyword);
        return Err(unknown_word(&role, "output role", &roles));
    };
    let output = Output {
        role,
        name: name.as_str().to_string(),
        value: read_use(graph, &value)?,
    };
    check_output(graph, &graph.outputs, &output).map_err(|problem| error_at(&name, problem))?;
    graph.outputs.push(output);
    Ok(())
}

/// The error for a word that is none of `known`, with the nearest as a suggestion.
fn unknown_word(word: &Pair<Rule>, what: &str, known: &[&str]) -> ParseError {
    let text = word.as_str();
    let hint = match nearest(text, known.iter().copied()) {
        Some(near) => format!("; did you mean `{near}`?"),
        None => format!(" (one of {})", known.join(", ")),
    };
    error_at(word, format!("unknown {what} `{text}`{hint}"))
}

/// One op of every kind, `Map` with every function, with placeholder attributes for the text to
/// fill in.
fn blank_ops() -> Vec<OpKind> {
    let conv = ConvAttrs {
        stride: [0; 2],
        pad: [0; 4],
        dilation: [0; 2],
        groups: 0,
    };
    let pool = PoolAttrs {
        kernel: [0; 2],
        stride: [0; 2],
        pad: [0; 4],
        ceil: false,
        include_pad: false,
    };
    let maps = [
        MapFn::Neg,
        MapFn::Exp,
        MapFn::Log,
        MapFn::Sqrt,
        MapFn::Abs,
        MapFn::Sign,
        MapFn::Step,
        MapFn::Sigmoid,
        MapFn::Tanh,
        MapFn::Relu,
        MapFn::LeakyRelu(0.0),
        MapFn::Scale(0.0),
        MapFn::AddConst(0.0),
        MapFn::PowConst(0.0),
    ];
    let kinds = [
        OpKind::Conv2d(conv),
        OpKind::Conv2dInputGrad(conv, [0; 2]),
        OpKind::Conv2dWeightGrad(conv, [0; 2]),
        OpKind::PooledConv2dWeightGrad {
            conv,
            kernel: [0; 2],
        },
        OpKind::MatMul {
            transpose_a: false,
            transpose_b: false,
        },
        OpKind::MaxPool(pool),
        OpKind::MaxPoolWithIndices(pool),
        OpKind::MaxPoolGrad(pool),
        OpKind::AvgPool(pool),
        OpKind::AvgPoolGrad(pool, [0; 2]),
        OpKind::ChannelWindowSum { size: 0 },
        OpKind::Add,
        OpKind::Sub,
        OpKind::Mul,
        OpKind::Div,
        OpKind::Reshape(vec![]),
        OpKind::SumTo(vec![]),
        OpKind::SumSquaredDeviationsTo(vec![]),
        OpKind::Broadcast(vec![]),
        OpKind::Concat { axis: 0 },
        OpKind::Slice {
            axis: 0,
            start: 0,
            len: 0,
        },
        OpKind::Softmax,
        OpKind::SoftmaxGrad,
        OpKind::SoftmaxCrossEntropy,
        OpKind::SoftmaxCrossEntropyGrad,
        OpKind::BinaryCrossEntropy,
        OpKind::BinaryCrossEntropyGrad,
        OpKind::DropoutMask {
            rate: 0.0,
            stream: 0,
            shape: vec![],
        },
        OpKind::Fill {
            value: 0.0,
            shape: vec![],
        },
        OpKind::Fused(Chain::default()),
    ];
    kinds.into_iter().chain(maps.map(OpKind::Map)).collect()
}

/// The op an op line names, with its attributes read from the text.
fn read_kind(name: &Pair<Rule>, attribute_pairs: Vec<Pair<Rule>>) -> Result<OpKind, ParseError> {
    let blanks = blank_ops();
    let Some(mut kind) = blanks.iter().find(|k| k.name() == name.as_str()).cloned() else {
        let names: Vec<&str> = blanks.iter().map(OpKind::name).collect();
        return Err(unknown_word(name, "op", &names));
    };
    let op_name = kind.name();
    let slots = attributes(&mut kind);
    let expected: Vec<&str> = slots.iter().map(|(attribute, _)| *attribute).collect();
    let given: Vec<(Pair<Rule>, Pair<Rule>)> = attribute_pairs
        .into_iter()
        .map(|attribute| {
            let [word, value] = parts(attribute);
            (word, value)
        })
        .collect();
    let given_names: Vec<&str> = given.iter().map(|(word, _)| word.as_str()).collect();
    if given_names != expected {
        // At the first attribute out of place, or at the op's name when one is missing.
        let mismatch = given_names
            .iter()
            .zip(&expected)
            .position(|(g, e)| g != e)
            .unwrap_or(given_names.len().min(expected.len()));
        let at = given.get(mismatch).map_or(name, |(word, _)| word);
        let message = if expected.is_empty() {
            format!("`{op_name}` takes no attributes")
        } else {
            format!(
                "`{op_name}` takes the attributes {}, in this order",
                expected.join(", ")
            )
        };
        return Err(error_at(at, message));
    }
    for ((attribute, slot), (_, value)) in slots.into_iter().zip(&given) {
        fill(attribute, slot, value)?;
    }
    Ok(kind)
}

/// Sets an attribute from its value in the text.
fn fill(attribute: &str, slot: Attribute, value: &Pair<Rule>) -> Result<(), ParseError> {
    let text = value.as_str();
    let form = slot.form();
    let wrong_form = || error_at(value, format!("`{attribute}` is {form}, not `{text}`"));
    match (slot, value.as_rule()) {
        (Attribute::Count(n), Rule::number) if text.bytes().all(|b| b.is_ascii_digit()) => {
            *n = read_integer(value)?
        }
        (Attribute::Key(k), Rule::number) => *k = text.parse().map_err(|_| wrong_form())?,
        (Attribute::Real(x), Rule::number) => *x = text.parse().map_err(|_| wrong_form())?,
        (Attribute::Flag(b), Rule::flag) => *b = text == "true",
        (Attribute::Pair(pair), Rule::pair) => *pair = read_integers(value)?,
        (Attribute::Sides(sides), Rule::sides) => *sides = read_integers(value)?,
        (Attribute::Shape(shape), Rule::shape) => *shape = read_shape(value)?,
        (Attribute::Chain(chain), Rule::chain) => *chain = read_chain(value)?,
        _ => return Err(wrong_form()),
    }
    Ok(())
}

/// A fused op's steps. Whether the arguments exist is the shape rule's to say.
fn read_chain(pair: &Pair<Rule>) -> Result<Chain, ParseError> {
    let mut steps = Vec::new();
    let mut results = Vec::new();
    for step in pair.clone().into_inner() {
        if step.as_rule() == Rule::chain_results {
            for result in step.into_inner() {
                if !result.as_str().starts_with('t') {
                    return Err(error_at(&result, "a chain's results are steps, like `t1`"));
                }
                results.push(read_integer(
                    &result.into_inner().next().expect("a number"),
                )?);
            }
            continue;
        }
        let mut parts = step.into_inner();
        let word = parts.next().expect("a step has a name");
        let mut args = Vec::new();
        let mut attribute_pairs = Vec::new();
        for part in parts {
            match part.as_rule() {
                Rule::chain_arg => {
                    let index = read_integer(&part.clone().into_inner().next().expect("a number"))?;
                    args.push(match &part.as_str()[..1] {
                        "x" => Arg::Input(index),
                        _ => Arg::Step(index),
                    });
                }
                Rule::step_attribute => attribute_pairs.push(part),
                Rule::arguments_end => {}
                rule => unreachable!("the grammar puts no {rule:?} in a step"),
            }
        }
        let kind = read_kind(&word, attribute_pairs)?;
        if !may_be_step(&kind) {
            return Err(error_at(
                &word,
                format!("`{}` cannot be a step of a chain", kind.name()),
            ));
        }
        steps.push(Step { kind, args });
    }
    Ok(Chain { steps, results })
}

/// A whole number (digits only), which must be at most `MAX_INTEGER`.
fn read_integer(pair: &Pair<Rule>) -> Result<usize, ParseError> {
    let text = pair.as_str();
    text.parse()
        .ok()
        .filter(|&n| n <= MAX_INTEGER)
        .ok_or_else(|| {
            error_at(
                pair,
                format!("{text} is too large: extents and counts are at most {MAX_INTEGER}"),
            )
        })
}

/// The whole numbers inside a pair, sides or shape, exactly `N` of them.
fn read_integers<const N: usize>(pair: &Pair<Rule>) -> Result<[usize; N], ParseError> {
    let mut integers = [0; N];
    for (integer, part) in integers.iter_mut().zip(parts::<N>(pair.clone())) {
        *integer = read_integer(&part)?;
    }
    Ok(integers)
}

/// A shape whose element count fits in a `usize`, counted in the order `Iterator::product`
/// multiplies, so the shape rules can count it without overflow.
fn read_shape(pair: &Pair<Rule>) -> Result<Shape, ParseError> {
    let shape = pair
        .clone()
        .into_inner()
        .map(|extent| read_integer(&extent))
        .collect::<Result<Shape, _>>()?;
    if shape
        .iter()
        .try_fold(1usize, |n, &e| n.checked_mul(e))
        .is_none()
    {
        return Err(error_at(
            pair,
            format!("{} has too many elements", ShapeText(&shape)),
        ));
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::{blank_ops, parse};
    use crate::ir::ops::OpKind;
    use crate::ir::print::examples::{every_op, tiny, variant_number, VARIANTS};
    use crate::ir::print::print;
    use crate::ir::verify::verify;
    use crate::ir::Graph;
    use proptest::prelude::*;

    #[test]
    fn every_op_round_trips() {
        for graph in [tiny(), every_op()] {
            let text = print(&graph);
            let parsed = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(parsed, graph);
            assert_eq!(print(&parsed), text);
        }
    }

    #[test]
    fn blank_ops_has_each_variant_once() {
        let mut numbers: Vec<usize> = blank_ops().iter().map(variant_number).collect();
        numbers.sort();
        assert_eq!(numbers, (0..VARIANTS).collect::<Vec<_>>());
    }

    /// The reals of fills of `reals`, printed and parsed back, bit for bit (NaN included).
    fn reals_after_round_trip(reals: &[f64]) -> Vec<u64> {
        let mut graph = Graph::new("reals");
        for &value in reals {
            let shape = vec![];
            graph.op(OpKind::Fill { value, shape }, &[], None);
        }
        let parsed = parse(&print(&graph)).expect("parses");
        let parsed_reals = parsed.ops.iter().map(|op| match op.kind {
            OpKind::Fill { value, .. } => value.to_bits(),
            _ => unreachable!("only fills"),
        });
        parsed_reals.collect()
    }

    #[test]
    fn reals_round_trip_bit_for_bit() {
        let reals = [
            0.1,
            1e-8,
            1e300,
            5e-324,
            -0.0,
            f64::INFINITY,
            -f64::INFINITY,
            f64::NAN,
        ];
        assert_eq!(reals_after_round_trip(&reals), reals.map(f64::to_bits));
    }

    #[test]
    fn any_layout_parses() {
        let text = print(&tiny());
        let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let spread = text.replace(' ', " \t ").replace('\n', "\n\n  \n");
        for layout in [one_line, spread] {
            assert_eq!(parse(&layout), Ok(tiny()), "{layout}");
        }
    }

    /// Broken text, each with its error. The ops' lines follow `%0 = data x : [2,3]`.
    #[test]
    fn malformed_text_is_an_error_at_its_place() {
        let graph = |body: &str| format!("graph g {{\n  %0 = data x : [2,3]\n{body}\n}}\n");
        let cases = [
            (String::new(), "1:1: expected `graph`"),
            ("graph {\n}".into(), "1:7: expected a dotted name like `conv1.weight`"),
            ("graph g {\n  %0 = data x : [2]\n".into(), "3:1: expected `}`, a value like `%3`, or an output like `output loss loss = %9`"),
            ("graph g { ü }".into(), "1:11: expected `}`, a value like `%3`, or an output like `output loss loss = %9`"),
            (graph("  %1 = data y : [2,3] @conv1"), "3:23: expected `}`, a value like `%3`, or an output like `output loss loss = %9`"),
            (graph("  output loss loss = %0\n  %1 = data y : [2]"), "4:3: expected `}` or an output like `output loss loss = %9`"),
            (graph("  %2 = data y : [2]"), "3:3: expected %1: values are numbered in order from %0"),
            (graph("  %1 = dta y : [2]"), "3:8: unknown input kind `dta`; did you mean `data`?"),
            (graph("  %1 = param x : [2]"), "3:14: `x` already names input %0"),
            (graph("  %1 = scalar lr : [1]"), "3:15: a scalar input has shape [], not [1]"),
            (graph("  %1 = data y : [4294967296]"), "3:18: 4294967296 is too large: extents and counts are at most 2147483647"),
            (graph("  %1 = data y : [2147483647,2147483647,2147483647]"), "3:17: [2147483647,2147483647,2147483647] has too many elements"),
            (graph("  %1 = relu(%1) : [2,3]"), "3:13: %1 is not defined before this line"),
            (graph("  %1 = relux(%0) : [2,3]"), "3:8: unknown op `relux`; did you mean `relu`?"),
            (graph("  %1 = frobnicate(%0) : [2,3]"), "3:8: unknown op `frobnicate` (one of conv2d, conv2d_input_grad, conv2d_weight_grad, pooled_conv2d_weight_grad, matmul, maxpool, maxpool_with_indices, maxpool_grad, avgpool, avgpool_grad, channel_window_sum, add, sub, mul, div, reshape, sum_to, sum_squared_deviations_to, broadcast, concat, slice, softmax, softmax_grad, softmax_cross_entropy, softmax_cross_entropy_grad, binary_cross_entropy, binary_cross_entropy_grad, dropout_mask, fill, fused, neg, exp, log, sqrt, abs, sign, step, sigmoid, tanh, relu, leaky_relu, scale, add_const, pow_const)"),
            (graph("  %1 = relu(%0) : [3,2]"), "3:19: `relu` gives [2,3] here, not [3,2]"),
            (graph("  %1 = add(%0) : [2,3]"), "3:8: `add` on [2,3]: expected 2 inputs, found 1"),
            (graph("  %1 = leaky_relu(%0) : [2,3]"), "3:8: `leaky_relu` takes the attributes slope, in this order"),
            (graph("  %1 = relu(%0) slope=0.1 : [2,3]"), "3:17: `relu` takes no attributes"),
            (graph("  %1 = slice(%0) start=0 axis=1 len=1 : [2,1]"), "3:18: `slice` takes the attributes axis, start, len, in this order"),
            (graph("  %1 = leaky_relu(%0) slope=true : [2,3]"), "3:29: `slope` is a number like `0.5`, not `true`"),
            (graph("  %1 = concat(%0) axis=-1 : [2,3]"), "3:24: `axis` is a whole number, not `-1`"),
            (graph("  %1 = concat(%0) axis=1.0 : [2,3]"), "3:24: `axis` is a whole number, not `1.0`"),
            (graph("  %1 = dropout_mask() rate=0.5 stream=18446744073709551616 shape=[2] : [2]"), "3:39: `stream` is a whole number below 2^64, not `18446744073709551616`"),
            (graph("  %1 = reshape(%0) shape=6 : [6]"), "3:26: `shape` is a shape like `[2,3]`, not `6`"),
            (graph("  %1 = channel_window_sum(%0) size=2 : [2,3]"), "3:8: `channel_window_sum` on [2,3]: window size 2 is not odd"),
            (graph("  %1 = pooled_conv2d_weight_grad(%0, %0, %0) stride=1x1 pad=0,0,1,1 dilation=1x1 groups=1 kernel=3x3 : [1,1,3,3]"), "3:8: `pooled_conv2d_weight_grad` on [2,3], [2,3], [2,3]: the convolution must not be padded"),
            (graph("  %1 = relu(%0) : [2,3] @conv 1"), "3:31: expected `}`, a value like `%3`, or an output like `output loss loss = %9`"),
            ("graph g %0 = data x : [2]\n}".into(), "1:9: expected `{`"),
            (graph("  %1 = relu(%0 : [2,3]"), "3:16: expected `)`"),
            (graph("  %1 = relu(%0) [2,3]"), "3:17: expected a word such as an op or attribute name"),
            (graph("  %1 = relu(%0) : [2,3,]"), "3:24: expected a whole number"),
            (graph("  %1 = relu(%0) : (2,3)"), "3:19: expected a shape like `[2,3]`"),
            (graph("  %1 = relu %0 : [2,3]"), "3:13: expected arguments like `(%1, %2)` or a dotted name like `conv1.weight`"),
            (graph("  %1 = relu(%0) : [2,3"), "3:19: expected a shape like `[2,3]`"),
            (graph("  %1 = matmul(%0, %0) transpose_a=false transpose_b= : [2,2]"), "3:54: expected steps like `{mul(x0, x1); relu(t0)}`, a shape like `[2,3]`, `true` or `false`, a number, or a whole number"),
            (graph("  %1 = maxpool(%0) kernel=2 x 2 : [2,2]"), "3:29: expected an attribute like `axis=1`"),
            (graph("  %1 = fused(%0) chain={neg(x0); sum_to(x0) shape=[1,3] -> t0, x0} : [8]"), "3:64: a chain's results are steps, like `t1`"),
            (graph("  %1 = fused(%0) chain={neg(x0); sum_to(t0) shape=[1,3] -> t1} : [3]"), "3:8: `fused` on [2,3]: a chain lists two or more results, in step order (and last, its prologue's value if it stores it)"),
            (graph("  output los loss = %0"), "3:10: unknown output role `los`; did you mean `loss`?"),
            (graph("  output loss loss = %1"), "3:22: %1 is not defined before this line"),
            (graph("  output loss loss = %0"), "3:15: output loss loss: a loss is a scalar, not [2,3]"),
            (graph("  output prediction y = %0\n  output prediction y = %0"), "4:21: output prediction y: listed twice"),
            (graph("  output gradient x = %0"), "3:19: output gradient x: no param input is named `x`"),
        ];
        let mut wrong = Vec::new();
        for (text, expected) in &cases {
            match parse(text) {
                Ok(_) => wrong.push(format!("{text:?} parsed")),
                Err(e) if e.to_string() != *expected => {
                    wrong.push(format!("({text:?}, {:?}),", e.to_string()))
                }
                Err(_) => {}
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// An edit to a valid text.
    #[derive(Clone, Debug)]
    enum Edit {
        /// Replaces `removed` characters (0 or 1) at the index with a piece.
        Splice {
            at: prop::sample::Index,
            removed: usize,
            piece: &'static str,
        },
        /// Repeats the line at the index, which redefines a value, input or output.
        RepeatLine(prop::sample::Index),
    }

    /// Pieces of the text form and numbers near its limits, so edits reach past the grammar.
    const PIECES: &[&str] = &[
        "",
        "%",
        "0",
        "1",
        "9",
        "-",
        ".",
        ",",
        "x",
        "=",
        ":",
        "@",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        " ",
        "\n",
        "e",
        "inf",
        "NaN",
        "true",
        "output",
        "data",
        "scalar",
        "relu",
        "conv2d",
        "loss",
        "2147483648",
        "99999999999999999999",
        "ü",
    ];

    fn edit() -> impl Strategy<Value = Edit> {
        let splice = (
            any::<prop::sample::Index>(),
            0..=1usize,
            prop::sample::select(PIECES),
        );
        prop_oneof![
            4 => splice.prop_map(|(at, removed, piece)| Edit::Splice { at, removed, piece }),
            1 => any::<prop::sample::Index>().prop_map(Edit::RepeatLine),
        ]
    }

    fn apply(text: &str, edit: &Edit) -> String {
        match edit {
            Edit::Splice { at, removed, piece } => {
                let mut chars: Vec<char> = text.chars().collect();
                let at = at.index(chars.len() + 1);
                let end = (at + removed).min(chars.len());
                chars.splice(at..end, piece.chars());
                chars.into_iter().collect()
            }
            Edit::RepeatLine(at) => {
                let mut lines: Vec<&str> = text.split('\n').collect();
                let at = at.index(lines.len());
                lines.insert(at, lines[at]);
                lines.join("\n")
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = parse(&text);
        }

        #[test]
        fn any_real_round_trips(real in any::<f64>()) {
            prop_assert_eq!(reals_after_round_trip(&[real]), [real.to_bits()]);
        }

        /// Whatever parses also verifies, and prints to text that parses back to it.
        #[test]
        fn edited_text_never_panics(edits in prop::collection::vec(edit(), 1..4)) {
            let text = edits.iter().fold(print(&every_op()), |text, e| apply(&text, e));
            if let Ok(graph) = parse(&text) {
                prop_assert_eq!(verify(&graph), Ok(()));
                let printed = print(&graph);
                let reparsed = parse(&printed).map(|g| print(&g));
                prop_assert_eq!(reparsed, Ok(printed));
            }
        }
    }
}
