//! The training recipe: the YAML file that says what to train on and how (data, batch size,
//! epochs, optimizer, schedule, early stopping, frozen layers, initialisation, checkpoints, seed
//! and network parameters), with command-line overrides, and errors that point at the offending
//! key, its line and column, and the nearest valid name.
//!
//! Values are checked while serde reads them, inside `Deserialize` impls, because that is where
//! serde_yaml knows the key path and the location; [`RecipeError`] then rewrites serde's own
//! messages into the recipe's wording.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::data::augment::Augment;
use crate::schedule::{EarlyStop, Schedule};

/// A training recipe, every part of it defaulted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a mapping")]
pub struct Recipe {
    pub data: DataRecipe,
    #[serde(deserialize_with = "count")]
    pub batch: usize,
    #[serde(deserialize_with = "count")]
    pub epochs: usize,
    pub optimizer: OptimizerRecipe,
    pub schedule: Schedule,
    pub early_stop: Option<EarlyStop>,
    pub freeze: Vec<Freeze>,
    pub init: InitRecipe,
    pub checkpoint: CheckpointRecipe,
    #[serde(deserialize_with = "seed")]
    pub seed: u64,
    /// Network parameters as `(name, value)`, in file order, each value as its source text, the
    /// way the command line's `--set NAME=VALUE` gives them.
    #[serde(
        deserialize_with = "network_parameters",
        serialize_with = "serialize_network_parameters"
    )]
    pub network: Vec<(String, String)>,
}

impl Recipe {
    /// The layers frozen during `epoch` (0-based).
    pub fn frozen_at(&self, epoch: usize) -> Vec<String> {
        self.freeze
            .iter()
            .filter(|f| f.epochs.is_none_or(|until| epoch < until))
            .map(|f| f.layer.clone())
            .collect()
    }

    /// Every set of frozen layers a run of any length meets, in the order it meets them.
    pub fn frozen_sets(&self) -> Vec<Vec<String>> {
        let last = self
            .freeze
            .iter()
            .filter_map(|f| f.epochs)
            .max()
            .unwrap_or(0);
        let mut sets: Vec<Vec<String>> = Vec::new();
        for epoch in 0..=last {
            let set = self.frozen_at(epoch);
            if !sets.contains(&set) {
                sets.push(set);
            }
        }
        sets
    }
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            data: DataRecipe::default(),
            batch: 64,
            epochs: 10,
            optimizer: OptimizerRecipe::default(),
            schedule: Schedule::default(),
            early_stop: None,
            freeze: Vec::new(),
            init: InitRecipe::default(),
            checkpoint: CheckpointRecipe::default(),
            seed: 42,
            network: Vec::new(),
        }
    }
}

/// What to train and validate on, and what to do to it on the way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a mapping")]
pub struct DataRecipe {
    /// A data set name or a directory path.
    pub train: String,
    /// The fraction of the training set held out for validation.
    #[serde(deserialize_with = "within::<BelowOne, _>")]
    pub validation_split: f64,
    pub normalize: Normalize,
    pub augment: Augment,
    /// Train on the first `limit` examples only.
    #[serde(deserialize_with = "optional_count")]
    pub limit: Option<usize>,
    /// Evaluate on the first `test_limit` test examples only.
    #[serde(deserialize_with = "optional_count")]
    pub test_limit: Option<usize>,
}

impl Default for DataRecipe {
    fn default() -> Self {
        DataRecipe {
            train: "fashion-mnist".to_owned(),
            validation_split: 0.1,
            normalize: Normalize::Auto,
            augment: Augment::default(),
            limit: None,
            test_limit: None,
        }
    }
}

/// How input images are normalised per channel.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Normalize {
    /// By the training set's own per-channel mean and standard deviation.
    #[default]
    Auto,
    None,
    Given {
        mean: Vec<f32>,
        std: Vec<f32>,
    },
}

/// Optimizer names as a recipe writes them.
const OPTIMIZERS: [&str; 7] = [
    "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw",
];

/// The optimizer and its hyper-parameters; `None` means the optimizer's PyTorch default.
///
/// `sgd`, `momentum` and `nesterov` are one family, as in PyTorch's `SGD`: the kind is
/// resolved from the momentum and the `nesterov` flag, so `kind: sgd, momentum: 0.9` reads as
/// `momentum`, and `momentum` and `nesterov` always carry their momentum (0.9 unless given).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(into = "OptimizerFields")]
pub struct OptimizerRecipe {
    /// One of `sgd`, `momentum`, `nesterov`, `adagrad`, `rmsprop`, `adam`, `adamw`.
    pub kind: String,
    pub lr: f64,
    pub momentum: Option<f64>,
    /// L2 penalty; 0.01 for `adamw` unless given (PyTorch's default), otherwise 0.
    pub weight_decay: f64,
    pub l1: f64,
    pub beta1: Option<f64>,
    pub beta2: Option<f64>,
    pub eps: Option<f64>,
    /// RMSprop's smoothing constant.
    pub alpha: Option<f64>,
    /// Decay every parameter, not only weights (biases and normalisation parameters too).
    pub decay_all: bool,
}

impl Default for OptimizerRecipe {
    fn default() -> Self {
        OptimizerRecipe {
            kind: "momentum".to_owned(),
            lr: 0.01,
            momentum: Some(DEFAULT_MOMENTUM),
            weight_decay: 0.0,
            l1: 0.0,
            beta1: None,
            beta2: None,
            eps: None,
            alpha: None,
            decay_all: false,
        }
    }
}

const DEFAULT_MOMENTUM: f64 = 0.9;

/// A layer whose parameters do not train, for the whole run or for its first `epochs` epochs.
#[derive(Clone, Debug, PartialEq)]
pub struct Freeze {
    pub layer: String,
    pub epochs: Option<usize>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitKind {
    /// Each layer's PyTorch default (Kaiming-uniform with `a = sqrt(5)` for weights).
    #[default]
    PyTorch,
    He,
    Xavier,
}

/// How parameters start: an initialiser, or values loaded from a file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a mapping")]
pub struct InitRecipe {
    pub kind: InitKind,
    /// Load parameters from this file; those it lacks start from `kind`.
    pub from: Option<PathBuf>,
}

/// When and where checkpoints are written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a mapping")]
pub struct CheckpointRecipe {
    #[serde(deserialize_with = "optional_count")]
    pub every_steps: Option<usize>,
    #[serde(deserialize_with = "count")]
    pub every_epochs: usize,
    /// `None`: the driver picks.
    pub dir: Option<PathBuf>,
}

impl Default for CheckpointRecipe {
    fn default() -> Self {
        CheckpointRecipe {
            every_steps: None,
            every_epochs: 1,
            dir: None,
        }
    }
}

/// Why a recipe was rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipeError {
    /// What is wrong, naming the key by its dotted path; starts with "in override `k=v`" when
    /// an override caused it.
    pub message: String,
    /// The nearest valid name, or the valid ones.
    pub hint: Option<String>,
    /// 1-based, in the file.
    pub line: Option<usize>,
    /// 1-based, in the file.
    pub column: Option<usize>,
    /// The index of the override that caused it.
    pub override_index: Option<usize>,
}

impl fmt::Display for RecipeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "line {line}, column {column}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  help: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RecipeError {}

impl Recipe {
    /// Reads a recipe. `overrides` are `(dotted.key, YAML value text)` pairs from the command
    /// line (`--recipe-set data.limit=500`), applied in order to the file's YAML before it is
    /// typed, so they are checked exactly like the file's keys. The file must be a valid recipe
    /// on its own, and each override must leave it valid.
    pub fn parse(text: &str, overrides: &[(String, String)]) -> Result<Recipe, RecipeError> {
        let mut tree: Value = serde_yaml::from_str(text).map_err(|err| {
            let mut error = RecipeError::located(&err);
            error.message = format!("invalid YAML: {}", error.message);
            error
        })?;
        let mut recipe = Recipe::typed(&tree, text).map_err(|err| RecipeError::typing(&err))?;
        tree.apply_merge()
            .map_err(|err| RecipeError::located(&err))?;
        for (index, (key, value)) in overrides.iter().enumerate() {
            let in_override = |message: String, hint: Option<String>| RecipeError {
                message: format!("in override `{key}={value}`: {message}"),
                hint,
                line: None,
                column: None,
                override_index: Some(index),
            };
            set(&mut tree, key, value).map_err(|message| in_override(message, None))?;
            let rendered =
                serde_yaml::to_string(&tree).map_err(|err| in_override(err.to_string(), None))?;
            recipe = Recipe::typed(&tree, &rendered).map_err(|err| {
                let typing = RecipeError::typing(&err);
                in_override(typing.message, typing.hint)
            })?;
        }
        Ok(recipe)
    }

    /// Types `text`, whose YAML is `tree`; an empty document is an empty recipe.
    fn typed(tree: &Value, text: &str) -> Result<Recipe, serde_yaml::Error> {
        serde_yaml::from_str(if tree.is_null() { "{}" } else { text })
    }

    /// The effective recipe as YAML, which parses again to an equal recipe.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a recipe is plain data, so it always serialises")
    }
}

impl RecipeError {
    /// An error at the location serde_yaml gives, with the location taken out of its text.
    fn located(err: &serde_yaml::Error) -> RecipeError {
        let mut message = err.to_string();
        let location = err.location();
        if let Some(location) = &location {
            let at = format!(" at line {} column {}", location.line(), location.column());
            message = message.replacen(&at, "", 1);
        }
        RecipeError {
            message,
            hint: None,
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            override_index: None,
        }
    }

    /// An error from typing the recipe, in the recipe's wording.
    fn typing(err: &serde_yaml::Error) -> RecipeError {
        let located = RecipeError::located(err);
        let (path, raw) = split_path(&located.message);
        let (message, hint) = explain(path, raw);
        RecipeError {
            message,
            hint,
            ..located
        }
    }
}

/// Splits serde_yaml's `path: message` into its two halves; the path is absent at the root.
/// A path never holds a space and serde's own messages always do before their first colon.
fn split_path(text: &str) -> (&str, &str) {
    match text.split_once(": ") {
        Some((path, message)) if !path.contains(' ') => (path, message),
        _ => ("", text),
    }
}

/// Rewrites a message raised while typing the value at `path` into the recipe's wording: serde's
/// own messages by their fixed forms, and this crate's, which are predicates about the value
/// ("must be at least 1, found 0"), by naming the key in front.
fn explain(path: &str, raw: &str) -> (String, Option<String>) {
    let key = if path.is_empty() {
        "the recipe".to_owned()
    } else {
        format!("`{path}`")
    };
    let names = backquoted(raw);
    if let (true, Some((name, valid))) = (raw.starts_with("unknown field "), names.split_first()) {
        let place = if path.is_empty() {
            String::new()
        } else {
            format!(" in {key}")
        };
        return (format!("unknown key `{name}`{place}"), nearest(name, valid));
    }
    if let (true, Some((name, valid))) = (raw.starts_with("unknown variant "), names.split_first())
    {
        return (
            format!("unknown value `{name}` for {key}"),
            nearest(name, valid),
        );
    }
    let mismatch = raw
        .strip_prefix("invalid type: ")
        .or_else(|| raw.strip_prefix("invalid value: "))
        .and_then(|rest| rest.split_once(", expected "));
    if let Some((found, expected)) = mismatch {
        return (format!("{key} must be {expected}, found {found}"), None);
    }
    if let Some((found, expected)) = raw
        .strip_prefix("invalid length ")
        .and_then(|rest| rest.split_once(", expected "))
    {
        return (
            format!("{key} must be {expected}, found a list of {found}"),
            None,
        );
    }
    if let (true, Some(name)) = (raw.starts_with("missing field "), names.first()) {
        return (format!("{key} is missing `{name}`"), None);
    }
    (format!("{key} {raw}"), None)
}

/// The names between backquotes in `text`, in order.
fn backquoted(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// "did you mean" the valid name nearest to `name`, or the list of valid names when none is
/// near.
fn nearest(name: &str, valid: &[&str]) -> Option<String> {
    let best = valid
        .iter()
        .map(|candidate| (strsim::jaro_winkler(name, candidate), candidate))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((similarity, candidate)) if similarity >= 0.7 => {
            Some(format!("did you mean `{candidate}`?"))
        }
        Some(_) => Some(format!(
            "expected one of {}",
            valid
                .iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => None,
    }
}

/// Sets the dotted `key` of `tree` to the YAML `value`, making the mappings on the way; what
/// the key names is left for typing to check.
fn set(tree: &mut Value, key: &str, value: &str) -> Result<(), String> {
    let value: Value =
        serde_yaml::from_str(value).map_err(|err| format!("the value is not YAML: {err}"))?;
    let mut node = tree;
    let mut walked = String::new();
    for part in key.split('.') {
        if part.is_empty() {
            return Err(format!("`{key}` is not a dotted key"));
        }
        if node.is_null() {
            *node = Value::Mapping(Default::default());
        }
        let Value::Mapping(mapping) = node else {
            return Err(format!(
                "`{walked}` is a value, not a mapping, so it has no key `{part}`"
            ));
        };
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(part);
        node = mapping
            .entry(Value::String(part.to_owned()))
            .or_insert(Value::Null);
    }
    *node = value;
    Ok(())
}

/// A rule a number must satisfy, stated the way an error message finishes "must be ...".
pub(crate) trait Range {
    const RULE: &'static str;
    fn contains(x: f64) -> bool;
}

pub(crate) enum Positive {}
impl Range for Positive {
    const RULE: &'static str = "greater than 0";
    fn contains(x: f64) -> bool {
        x > 0.0
    }
}

pub(crate) enum AtLeastZero {}
impl Range for AtLeastZero {
    const RULE: &'static str = "at least 0";
    fn contains(x: f64) -> bool {
        x >= 0.0
    }
}

/// `[0, 1)`.
pub(crate) enum BelowOne {}
impl Range for BelowOne {
    const RULE: &'static str = "in [0, 1)";
    fn contains(x: f64) -> bool {
        (0.0..1.0).contains(&x)
    }
}

/// `(0, 1)`.
pub(crate) enum Fraction {}
impl Range for Fraction {
    const RULE: &'static str = "in (0, 1)";
    fn contains(x: f64) -> bool {
        x > 0.0 && x < 1.0
    }
}

/// Reads a finite number within `R`. The check runs inside the visitor, where serde_yaml still
/// knows the number's own key and location.
pub(crate) fn within<'de, R: Range, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_f64(NumberVisitor::<R>(PhantomData))
}

struct NumberVisitor<R>(PhantomData<R>);

impl<R: Range> Visitor<'_> for NumberVisitor<R> {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_f64<E: de::Error>(self, x: f64) -> Result<f64, E> {
        if x.is_finite() && R::contains(x) {
            Ok(x)
        } else {
            Err(E::custom(format!("must be {}, found {x}", R::RULE)))
        }
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }
}

/// Reads one of `names`, giving its index.
pub(crate) fn one_of<'de, D: Deserializer<'de>>(
    d: D,
    names: &'static [&'static str],
) -> Result<usize, D::Error> {
    d.deserialize_str(NameVisitor(names))
}

struct NameVisitor(&'static [&'static str]);

impl Visitor<'_> for NameVisitor {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        self.0
            .iter()
            .position(|name| *name == v)
            .ok_or_else(|| E::unknown_variant(v, self.0))
    }
}

/// Reads a mapping as `F`, then makes a `T` of it, checking what no single value shows (which
/// settings go together). Doing both inside the map visitor gives the error the mapping's own
/// key and location rather than its parent's.
pub(crate) fn deserialize_checked<'de, D, F, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: Deserialize<'de>,
    T: TryFrom<F, Error = String>,
{
    d.deserialize_map(CheckedVisitor::<F, T>(PhantomData))
}

struct CheckedVisitor<F, T>(PhantomData<(F, T)>);

impl<'de, F: Deserialize<'de>, T: TryFrom<F, Error = String>> Visitor<'de>
    for CheckedVisitor<F, T>
{
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        let fields = F::deserialize(de::value::MapAccessDeserializer::new(map))?;
        T::try_from(fields).map_err(de::Error::custom)
    }
}

/// A number within `R`, for the optional settings whose presence matters.
pub(crate) struct Bounded<R>(pub f64, PhantomData<R>);

impl<R> Bounded<R> {
    pub(crate) fn new(x: f64) -> Self {
        Bounded(x, PhantomData)
    }
}

impl<'de, R: Range> Deserialize<'de> for Bounded<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        within::<R, D>(d).map(Bounded::new)
    }
}

impl<R> Serialize for Bounded<R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0)
    }
}

/// A whole number of at least `MIN`.
pub(crate) struct Whole<const MIN: usize>(pub usize);

impl<'de, const MIN: usize> Deserialize<'de> for Whole<MIN> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `deserialize_u64` would reject a negative number before the visitor sees it.
        d.deserialize_any(WholeVisitor::<MIN>)
    }
}

impl<const MIN: usize> Serialize for Whole<MIN> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0 as u64)
    }
}

struct WholeVisitor<const MIN: usize>;

impl<const MIN: usize> Visitor<'_> for WholeVisitor<MIN> {
    type Value = Whole<MIN>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole number")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        match usize::try_from(v) {
            Ok(n) if n >= MIN => Ok(Whole(n)),
            Ok(_) => Err(E::custom(format!("must be at least {MIN}, found {v}"))),
            Err(_) => Err(E::custom(format!(
                "must be at most {}, found {v}",
                usize::MAX
            ))),
        }
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!("must be at least {MIN}, found {v}"))),
        }
    }
}

/// Reads a whole number of at least 1.
pub(crate) fn count<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    Whole::<1>::deserialize(d).map(|n| n.0)
}

fn optional_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    Option::<Whole<1>>::deserialize(d).map(|n| n.map(|n| n.0))
}

fn seed<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Whole::<0>::deserialize(d).map(|n| n.0 as u64)
}

impl<'de> Deserialize<'de> for Normalize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NormalizeVisitor)
    }
}

struct NormalizeVisitor;

/// `normalize: {mean, std}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GivenNormalize {
    mean: Vec<f32>,
    std: Vec<Bounded<Positive>>,
}

impl<'de> Visitor<'de> for NormalizeVisitor {
    type Value = Normalize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`auto`, `none` or a mapping with `mean` and `std`")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Normalize, E> {
        match v {
            "auto" => Ok(Normalize::Auto),
            "none" => Ok(Normalize::None),
            _ => Err(E::unknown_variant(v, &["auto", "none"])),
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Normalize, A::Error> {
        let given = GivenNormalize::deserialize(de::value::MapAccessDeserializer::new(map))?;
        if given.mean.is_empty() || given.mean.len() != given.std.len() {
            return Err(de::Error::custom(format!(
                "must give one `mean` and one `std` per channel, found {} and {}",
                given.mean.len(),
                given.std.len()
            )));
        }
        Ok(Normalize::Given {
            mean: given.mean,
            std: given.std.iter().map(|s| s.0 as f32).collect(),
        })
    }
}

impl Serialize for Normalize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Normalize::Auto => s.serialize_str("auto"),
            Normalize::None => s.serialize_str("none"),
            Normalize::Given { mean, std } => {
                let mut given = s.serialize_struct("Normalize", 2)?;
                given.serialize_field("mean", mean)?;
                given.serialize_field("std", std)?;
                given.end()
            }
        }
    }
}

/// An optimizer as a recipe writes it; each value is checked as it is read, so its error
/// carries its own key and location.
#[derive(Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a mapping")]
struct OptimizerFields {
    #[serde(deserialize_with = "optimizer_kind")]
    kind: Option<String>,
    lr: Option<Bounded<Positive>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    momentum: Option<Bounded<BelowOne>>,
    /// Folded into `kind`, so never written back.
    #[serde(skip_serializing)]
    nesterov: Option<bool>,
    weight_decay: Option<Bounded<AtLeastZero>>,
    l1: Option<Bounded<AtLeastZero>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    beta1: Option<Bounded<BelowOne>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    beta2: Option<Bounded<BelowOne>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eps: Option<Bounded<Positive>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alpha: Option<Bounded<BelowOne>>,
    decay_all: Option<bool>,
}

fn optimizer_kind<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    one_of(d, &OPTIMIZERS).map(|i| Some(OPTIMIZERS[i].to_owned()))
}

impl<'de> Deserialize<'de> for OptimizerRecipe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_checked::<D, OptimizerFields, Self>(d)
    }
}

impl TryFrom<OptimizerFields> for OptimizerRecipe {
    type Error = String;
    fn try_from(fields: OptimizerFields) -> Result<Self, String> {
        let given = fields.kind.unwrap_or_else(|| "momentum".to_owned());
        let sgd_family = ["sgd", "momentum", "nesterov"].as_slice();
        let adam = ["adam", "adamw"].as_slice();
        // Which kinds use each optional setting, and whose setting to call it in the error.
        let settings = [
            ("momentum", fields.momentum.is_some(), sgd_family, "an SGD"),
            ("nesterov", fields.nesterov.is_some(), sgd_family, "an SGD"),
            ("beta1", fields.beta1.is_some(), adam, "an Adam"),
            ("beta2", fields.beta2.is_some(), adam, "an Adam"),
            (
                "eps",
                fields.eps.is_some(),
                &["adagrad", "rmsprop", "adam", "adamw"],
                "an Adagrad, RMSprop and Adam",
            ),
            ("alpha", fields.alpha.is_some(), &["rmsprop"], "an RMSprop"),
        ];
        for (name, present, kinds, owner) in settings {
            if present && !kinds.contains(&given.as_str()) {
                return Err(format!(
                    "has `{name}`, which does not apply to `{given}`; it is {owner} setting"
                ));
            }
        }
        let (kind, momentum) = if sgd_family.contains(&given.as_str()) {
            let momentum = fields.momentum.map_or(
                if given == "sgd" {
                    0.0
                } else {
                    DEFAULT_MOMENTUM
                },
                |m| m.0,
            );
            let nesterov = fields.nesterov.unwrap_or(given == "nesterov");
            match (nesterov, momentum > 0.0) {
                (true, false) => {
                    return Err("has `nesterov`, which needs `momentum` above 0".to_owned())
                }
                (true, true) => ("nesterov".to_owned(), Some(momentum)),
                (false, true) => ("momentum".to_owned(), Some(momentum)),
                (false, false) => ("sgd".to_owned(), None),
            }
        } else {
            (given, None)
        };
        let decoupled_decay = if kind == "adamw" { 0.01 } else { 0.0 };
        Ok(OptimizerRecipe {
            lr: fields.lr.map_or(0.01, |x| x.0),
            weight_decay: fields.weight_decay.map_or(decoupled_decay, |x| x.0),
            l1: fields.l1.map_or(0.0, |x| x.0),
            beta1: fields.beta1.map(|x| x.0),
            beta2: fields.beta2.map(|x| x.0),
            eps: fields.eps.map(|x| x.0),
            alpha: fields.alpha.map(|x| x.0),
            decay_all: fields.decay_all.unwrap_or(false),
            kind,
            momentum,
        })
    }
}

impl From<OptimizerRecipe> for OptimizerFields {
    fn from(recipe: OptimizerRecipe) -> Self {
        OptimizerFields {
            kind: Some(recipe.kind),
            lr: Some(Bounded::new(recipe.lr)),
            momentum: recipe.momentum.map(Bounded::new),
            nesterov: None,
            weight_decay: Some(Bounded::new(recipe.weight_decay)),
            l1: Some(Bounded::new(recipe.l1)),
            beta1: recipe.beta1.map(Bounded::new),
            beta2: recipe.beta2.map(Bounded::new),
            eps: recipe.eps.map(Bounded::new),
            alpha: recipe.alpha.map(Bounded::new),
            decay_all: Some(recipe.decay_all),
        }
    }
}

/// `{layer, epochs}`, the long form of a frozen layer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FreezeFields {
    layer: String,
    #[serde(default, deserialize_with = "optional_count")]
    epochs: Option<usize>,
}

impl<'de> Deserialize<'de> for Freeze {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FreezeVisitor)
    }
}

struct FreezeVisitor;

impl<'de> Visitor<'de> for FreezeVisitor {
    type Value = Freeze;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a layer name or a mapping with `layer` and `epochs`")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Freeze, E> {
        Ok(Freeze {
            layer: v.to_owned(),
            epochs: None,
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Freeze, A::Error> {
        let fields = FreezeFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Freeze {
            layer: fields.layer,
            epochs: fields.epochs,
        })
    }
}

impl Serialize for Freeze {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.epochs {
            None => s.serialize_str(&self.layer),
            Some(epochs) => {
                let mut fields = s.serialize_struct("Freeze", 2)?;
                fields.serialize_field("layer", &self.layer)?;
                fields.serialize_field("epochs", &epochs)?;
                fields.end()
            }
        }
    }
}

/// A network parameter's value: a number, boolean or word, kept as its source text.
struct ParameterValue(String);

impl<'de> Deserialize<'de> for ParameterValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // serde_yaml hands over any scalar's source text when asked for a string.
        d.deserialize_str(ParameterVisitor)
    }
}

struct ParameterVisitor;

impl Visitor<'_> for ParameterVisitor {
    type Value = ParameterValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, boolean or word")
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<ParameterValue, E> {
        let word = |c: char| c.is_alphanumeric() || "_-+.".contains(c);
        if !text.is_empty() && text.chars().all(word) {
            Ok(ParameterValue(text.to_owned()))
        } else {
            Err(E::custom(format!(
                "must be a number, boolean or word, found `{text}`"
            )))
        }
    }
}

fn network_parameters<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    d.deserialize_map(NetworkVisitor)
}

struct NetworkVisitor;

impl<'de> Visitor<'de> for NetworkVisitor {
    type Value = Vec<(String, String)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of parameter names to values")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // Duplicate names never get here: reading the file as YAML rejects them.
        let mut parameters = Vec::new();
        while let Some((name, value)) = map.next_entry::<String, ParameterValue>()? {
            parameters.push((name, value.0));
        }
        Ok(parameters)
    }
}

fn serialize_network_parameters<S: Serializer>(
    parameters: &[(String, String)],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(parameters.len()))?;
    for (name, value) in parameters {
        map.serialize_entry(name, value)?;
    }
    map.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleKind;

    fn overrides(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Each bad recipe, and the message, hint, line and column it gives.
    #[test]
    fn bad_recipes_name_the_key_the_place_and_the_fix() {
        let cases: &[(&str, &str, Option<&str>, usize, usize)] = &[
            ("data:\n  augment:\n    flip: true\n", "unknown key `flip` in `data.augment`", Some("did you mean `flip_horizontal`?"), 3, 5),
            ("bach: 3\n", "unknown key `bach`", Some("did you mean `batch`?"), 1, 1),
            ("batch: 0\n", "`batch` must be at least 1, found 0", None, 1, 8),
            ("batch: -1\n", "`batch` must be at least 1, found -1", None, 1, 8),
            ("epochs: 1.5\n", "`epochs` must be a whole number, found floating point `1.5`", None, 1, 9),
            ("batch: [1]\n", "`batch` must be a whole number, found sequence", None, 1, 8),
            ("data:\n  validation_split: 1.5\n", "`data.validation_split` must be in [0, 1), found 1.5", None, 2, 21),
            ("data: {limit: 0}\n", "`data.limit` must be at least 1, found 0", None, 1, 15),
            ("data:\n  normalize: autoo\n", "unknown value `autoo` for `data.normalize`", Some("did you mean `auto`?"), 2, 14),
            ("data:\n  normalize: {mean: [1, 2], std: [1, 0]}\n", "`data.normalize.std[1]` must be greater than 0, found 0", None, 2, 38),
            ("data:\n  normalize: {mean: [1, 2], std: [1]}\n", "`data.normalize` must give one `mean` and one `std` per channel, found 2 and 1", None, 2, 14),
            ("data:\n  augment: {scale: [0.9]}\n", "`data.augment.scale` must be a tuple of size 2, found a list of 1", None, 2, 20),
            ("optimizer: { kind: adamm }\n", "unknown value `adamm` for `optimizer.kind`", Some("did you mean `adam`?"), 1, 20),
            ("optimizer: { kind: bogus }\n", "unknown value `bogus` for `optimizer.kind`", Some("expected one of `sgd`, `momentum`, `nesterov`, `adagrad`, `rmsprop`, `adam`, `adamw`"), 1, 20),
            ("optimizer:\n  kind: momentum\n  beta1: 0.9\n", "`optimizer` has `beta1`, which does not apply to `momentum`; it is an Adam setting", None, 2, 3),
            ("optimizer: {kind: adam, alpha: 0.9}\n", "`optimizer` has `alpha`, which does not apply to `adam`; it is an RMSprop setting", None, 1, 12),
            ("optimizer: {kind: sgd, nesterov: true}\n", "`optimizer` has `nesterov`, which needs `momentum` above 0", None, 1, 12),
            ("optimizer: {lr: 0}\n", "`optimizer.lr` must be greater than 0, found 0", None, 1, 17),
            ("optimizer: {lr: .nan}\n", "`optimizer.lr` must be greater than 0, found NaN", None, 1, 17),
            ("optimizer: {momentum: 1}\n", "`optimizer.momentum` must be in [0, 1), found 1", None, 1, 23),
            ("schedule: {kind: stepp}\n", "unknown value `stepp` for `schedule.kind`", Some("did you mean `step`?"), 1, 18),
            ("schedule: {kind: step, gamma: 0.5}\n", "`schedule` has `gamma`, which does not apply to `step`", None, 1, 11),
            ("schedule: {kind: exponential}\n", "`schedule` of kind `exponential` needs `gamma`", None, 1, 11),
            ("schedule: {kind: plateau, factor: 1}\n", "`schedule.factor` must be in (0, 1), found 1", None, 1, 35),
            ("schedule: {kind: step, every: 2}\n", "unknown key `every` in `schedule`", Some("did you mean `every_epochs`?"), 1, 24),
            ("early_stop: {}\n", "`early_stop` is missing `patience`", None, 1, 13),
            ("early_stop: {patience: 2, min_delta: -1}\n", "`early_stop.min_delta` must be at least 0, found -1", None, 1, 38),
            ("freeze: [conv1, {layer: s, epochs: 0}]\n", "`freeze[1].epochs` must be at least 1, found 0", None, 1, 36),
            ("freeze: [conv1, {epochs: 2}]\n", "`freeze[1]` is missing `layer`", None, 1, 17),
            ("init: {kind: kaiming}\n", "unknown value `kaiming` for `init.kind`", Some("expected one of `pytorch`, `he`, `xavier`"), 1, 14),
            ("checkpoint: {every_epochs: 0}\n", "`checkpoint.every_epochs` must be at least 1, found 0", None, 1, 28),
            ("network: {a: 1 2}\n", "`network.a` must be a number, boolean or word, found `1 2`", None, 1, 14),
            ("network: {a: [1]}\n", "`network.a` must be a number, boolean or word, found sequence", None, 1, 14),
            ("network: {a: 1, a: 2}\n", "invalid YAML: network: duplicate entry with key \"a\"", None, 1, 10),
            ("- 1\n", "the recipe must be a mapping, found sequence", None, 1, 1),
            ("data: {train: x\n", "invalid YAML: did not find expected ',' or '}', while parsing a flow mapping at line 1 column 7", None, 2, 1),
        ];
        for &(text, message, hint, line, column) in cases {
            let expected = RecipeError {
                message: message.to_owned(),
                hint: hint.map(str::to_owned),
                line: Some(line),
                column: Some(column),
                override_index: None,
            };
            assert_eq!(Recipe::parse(text, &[]), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn bad_overrides_name_the_override() {
        // (file, overrides, the culprit's index, message, hint)
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            usize,
            &'a str,
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            ("", &[("data.limt", "500")], 0, "in override `data.limt=500`: unknown key `limt` in `data`", Some("did you mean `limit`?")),
            ("batch: 5\n", &[("batch.x", "1")], 0, "in override `batch.x=1`: `batch` is a value, not a mapping, so it has no key `x`", None),
            ("", &[("data.limit", "500"), ("optimizer.lr", "-1")], 1, "in override `optimizer.lr=-1`: `optimizer.lr` must be greater than 0, found -1", None),
            ("", &[("optimizer", "{kind: sgd, beta2: 0.9}")], 0, "in override `optimizer={kind: sgd, beta2: 0.9}`: `optimizer` has `beta2`, which does not apply to `sgd`; it is an Adam setting", None),
            ("", &[("data..limit", "1")], 0, "in override `data..limit=1`: `data..limit` is not a dotted key", None),
            ("", &[("batch", "[1,")], 0, "in override `batch=[1,`: the value is not YAML: did not find expected node content at line 2 column 1, while parsing a flow node", None),
        ];
        for &(text, pairs, index, message, hint) in cases {
            let expected = RecipeError {
                message: message.to_owned(),
                hint: hint.map(str::to_owned),
                line: None,
                column: None,
                override_index: Some(index),
            };
            assert_eq!(
                Recipe::parse(text, &overrides(pairs)),
                Err(expected),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn display_gives_the_place_and_the_help() {
        let error = Recipe::parse("bach: 3\n", &[]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 1, column 1: unknown key `bach`\n  help: did you mean `batch`?"
        );
    }

    #[test]
    fn overrides_apply_in_order_and_are_typed_like_the_file() {
        let recipe = Recipe::parse(
            "data: {limit: 100}\nnetwork: {classes: 10}\n",
            &overrides(&[
                ("data.limit", "500"),
                ("data.limit", "600"),
                ("schedule", "{kind: cosine}"),
                ("network.size", "32"),
                ("checkpoint.dir", "runs/x"),
            ]),
        )
        .unwrap();
        assert_eq!(recipe.data.limit, Some(600));
        assert_eq!(recipe.schedule.kind, ScheduleKind::Cosine { min_lr: 0.0 });
        assert_eq!(
            recipe.network,
            [("classes", "10"), ("size", "32")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(recipe.checkpoint.dir, Some(PathBuf::from("runs/x")));
    }

    #[test]
    fn an_empty_recipe_is_the_default() {
        let defaults = Recipe::default();
        assert_eq!(Recipe::parse("", &[]).unwrap(), defaults);
        assert_eq!(Recipe::parse("# nothing\n", &[]).unwrap(), defaults);
        assert_eq!(Recipe::parse("data:\n", &[]).unwrap(), defaults);
        assert_eq!(
            (defaults.batch, defaults.epochs, defaults.seed),
            (64, 10, 42)
        );
        assert_eq!(defaults.data.train, "fashion-mnist");
        assert_eq!(defaults.optimizer.kind, "momentum");
        assert_eq!(defaults.checkpoint.every_epochs, 1);
    }

    #[test]
    fn the_sgd_family_resolves_by_momentum_and_nesterov() {
        let cases = [
            ("{kind: sgd}", "sgd", None),
            ("{kind: sgd, momentum: 0.9}", "momentum", Some(0.9)),
            (
                "{kind: sgd, momentum: 0.5, nesterov: true}",
                "nesterov",
                Some(0.5),
            ),
            ("{kind: momentum}", "momentum", Some(0.9)),
            ("{kind: momentum, momentum: 0}", "sgd", None),
            ("{kind: nesterov}", "nesterov", Some(0.9)),
            ("{kind: adam}", "adam", None),
        ];
        for (optimizer, kind, momentum) in cases {
            let recipe = Recipe::parse(&format!("optimizer: {optimizer}\n"), &[]).unwrap();
            assert_eq!(
                (recipe.optimizer.kind.as_str(), recipe.optimizer.momentum),
                (kind, momentum),
                "{optimizer}"
            );
        }
        let adamw = Recipe::parse("optimizer: {kind: adamw}\n", &[]).unwrap();
        assert_eq!(adamw.optimizer.weight_decay, 0.01);
    }

    const DESIGN_EXAMPLE: &str = "\
data: { train: fashion-mnist, validation_split: 0.1,
        augment: { flip_horizontal: true, translate: 2, scale: [0.9, 1.1] } }
batch: 100
epochs: 10
optimizer: { kind: sgd, lr: 0.01, momentum: 0.9, weight_decay: 5.0e-4 }
schedule: { kind: step, every_epochs: 4, factor: 0.65 }
early_stop: { patience: 5 }
checkpoint: { every_steps: 500, dir: runs/fashion }
seed: 42
";

    #[test]
    fn the_design_example_parses() {
        let recipe = Recipe::parse(DESIGN_EXAMPLE, &[]).unwrap();
        assert_eq!(recipe.batch, 100);
        assert!(recipe.data.augment.flip_horizontal);
        assert_eq!(recipe.data.augment.scale, Some((0.9, 1.1)));
        assert_eq!(
            (recipe.optimizer.kind.as_str(), recipe.optimizer.momentum),
            ("momentum", Some(0.9))
        );
        assert_eq!(recipe.optimizer.weight_decay, 5.0e-4);
        assert_eq!(
            recipe.schedule.kind,
            ScheduleKind::Step {
                every_epochs: 4,
                factor: 0.65
            }
        );
        assert_eq!(
            recipe.early_stop,
            Some(EarlyStop {
                patience: 5,
                min_delta: 0.0
            })
        );
        assert_eq!(
            recipe.checkpoint,
            CheckpointRecipe {
                every_steps: Some(500),
                every_epochs: 1,
                dir: Some("runs/fashion".into())
            }
        );
    }

    #[test]
    fn to_yaml_parses_back_to_the_same_recipe() {
        let full = "\
data:
  train: /data/images
  normalize: {mean: [0.5, 0.25], std: [0.2, 0.1]}
  augment: {flip_horizontal: true, translate: 2, scale: [0.9, 1.1], rotate: 10, noise: 0.05}
  limit: 2000
  test_limit: 1000
optimizer: {kind: rmsprop, lr: 0.001, alpha: 0.95, eps: 1.0e-7, l1: 0.001, decay_all: true}
schedule: {kind: plateau, factor: 0.5, patience: 3, min_lr: 1.0e-6, warmup_epochs: 0.5}
freeze: [conv1, {layer: stage1, epochs: 2}]
init: {kind: he, from: weights.safetensors}
network: {classes: 10, wide: true, act: relu, rate: 0.50}
";
        for text in [full, DESIGN_EXAMPLE, "data: {normalize: none}\n", ""] {
            let recipe = Recipe::parse(text, &[]).unwrap();
            let yaml = recipe.to_yaml();
            assert_eq!(Recipe::parse(&yaml, &[]), Ok(recipe), "{yaml}");
        }
    }
}
