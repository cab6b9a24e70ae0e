//! The structural pass: walks the parsed TOML (every value with its span)
//! alongside the JSON Schema generated from the raw structs, and collects
//! every problem at once: unknown fields (with a "did you mean"), missing
//! fields, wrong types, values out of range, and values with units that do
//! not parse (durations, rates, times, time zones, thresholds), and text
//! that must not reach file names, logs or reports (control characters,
//! bidirectional overrides; see [`unsafe_char`]). serde alone
//! would stop at the first problem; this pass does not, and it uses the
//! same schema editors get from `fleetsim schema`.

use std::fmt;
use std::ops::Range;

use schemars::schema::{InstanceType, RootSchema, Schema, SchemaObject, SingleOrVec};
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::error::{suggest, Problem, ProblemKind, SourceMap};
use super::raw::{format, Sp};
use super::threshold::Threshold;
use super::units;

/// Definitions whose numeric fields must add up to 1.
const SUM_TO_ONE: &[(&str, &str)] = &[("Actions", "action mix"), ("PinMix", "PIN mix")];

/// A TOML value with spans on every nested value and key.
#[derive(Debug)]
pub(crate) enum Node {
    Str(String),
    Int(i64),
    Float(f64),
    Bool,
    Datetime,
    Array(Vec<Sp<Node>>),
    Table(Vec<(Sp<String>, Sp<Node>)>),
}

impl Node {
    fn type_name(&self) -> &'static str {
        match self {
            Node::Str(_) => "a string",
            Node::Int(_) => "an integer",
            Node::Float(_) => "a number with decimals",
            Node::Bool => "true or false",
            Node::Datetime => "a date-time",
            Node::Array(_) => "an array",
            Node::Table(_) => "a table",
        }
    }

    fn matches(&self, t: InstanceType) -> bool {
        matches!(
            (self, t),
            (Node::Str(_), InstanceType::String)
                | (Node::Int(_), InstanceType::Integer | InstanceType::Number)
                | (Node::Float(_), InstanceType::Number)
                | (Node::Bool, InstanceType::Boolean)
                | (Node::Array(_), InstanceType::Array)
                | (Node::Table(_), InstanceType::Object)
        )
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Node::Int(i) => Some(*i as f64),
            Node::Float(f) => Some(*f),
            _ => None,
        }
    }
}

/// TOML datetimes reach a visitor as a one-entry map under this key.
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a TOML value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Bool)
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Node, E> {
                i64::try_from(v)
                    .map(Node::Int)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Node::Array(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<Sp<String>>()? {
                    if k.get() == TOML_DATETIME_KEY {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        return Ok(Node::Datetime);
                    }
                    let mut v: Sp<Node> = map.next_value()?;
                    // A table TOML made implicitly has no span: point at
                    // its first key instead of the top of the file.
                    if v.span.is_empty() {
                        if let Node::Table(entries) = v.get() {
                            if let Some((first, first_value)) = entries.first() {
                                v.span = if first.span.is_empty() {
                                    first_value.span()
                                } else {
                                    first.span()
                                };
                            }
                        }
                    }
                    out.push((k, v));
                }
                Ok(Node::Table(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Walks a document against the schema, collecting problems.
pub(crate) struct Checker<'a> {
    root: &'a RootSchema,
    map: &'a SourceMap<'a>,
    pub problems: Vec<Problem>,
}

fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if plain {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

fn type_label(t: InstanceType) -> &'static str {
    match t {
        InstanceType::String => "a string",
        InstanceType::Integer => "an integer",
        InstanceType::Number => "a number",
        InstanceType::Boolean => "true or false",
        InstanceType::Array => "an array",
        InstanceType::Object => "a table",
        InstanceType::Null => "nothing",
    }
}

/// How to write a value of type `t`, for a hint.
fn type_shape(t: InstanceType) -> &'static str {
    match t {
        InstanceType::String => "text in quotes (\"...\")",
        InstanceType::Integer => "a whole number without quotes",
        InstanceType::Number => "a number without quotes",
        InstanceType::Boolean => "true or false",
        InstanceType::Array => "an array in brackets ([...])",
        InstanceType::Object => "a table ([section], or { key = value })",
        InstanceType::Null => "nothing",
    }
}

fn types_of(o: &SchemaObject) -> Vec<InstanceType> {
    match &o.instance_type {
        None => vec![],
        Some(SingleOrVec::Single(t)) => vec![**t],
        Some(SingleOrVec::Vec(v)) => v.clone(),
    }
}

fn or_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

impl<'a> Checker<'a> {
    pub fn new(root: &'a RootSchema, map: &'a SourceMap<'a>) -> Checker<'a> {
        Checker {
            root,
            map,
            problems: Vec::new(),
        }
    }

    fn report(
        &mut self,
        kind: ProblemKind,
        span: Range<usize>,
        path: &str,
        message: String,
        hint: Option<String>,
    ) {
        self.problems
            .push(self.map.problem(kind, span, path, message, hint));
    }

    /// Follows a `$ref`; returns the object and the definition name, if any.
    fn resolve<'s>(&self, o: &'s SchemaObject) -> Option<(&'s SchemaObject, Option<&'s str>)>
    where
        'a: 's,
    {
        let Some(r) = &o.reference else {
            return Some((o, None));
        };
        let name = r.rsplit('/').next()?;
        let (key, def) = self.root.definitions.get_key_value(name)?;
        let Schema::Object(def) = def else {
            return None;
        };
        let (def, _) = self.resolve(def)?;
        Some((def, Some(key.as_str())))
    }

    /// The types a schema accepts, looking through refs, allOf and anyOf.
    fn accepted_types(&self, s: &Schema) -> Vec<InstanceType> {
        let Schema::Object(o) = s else {
            return vec![];
        };
        let Some((o, _)) = self.resolve(o) else {
            return vec![];
        };
        let mut out = types_of(o);
        if let Some(sub) = &o.subschemas {
            let alts = sub.any_of.iter().chain(sub.one_of.iter());
            for s in sub.all_of.iter().chain(alts).flatten() {
                out.extend(self.accepted_types(s));
            }
        }
        out
    }

    fn description(&self, s: &Schema) -> Option<String> {
        let Schema::Object(o) = s else {
            return None;
        };
        let own = o.metadata.as_ref().and_then(|m| m.description.clone());
        if own.is_some() {
            return own;
        }
        let (r, _) = self.resolve(o)?;
        if let Some(d) = r.metadata.as_ref().and_then(|m| m.description.clone()) {
            return Some(d);
        }
        let sub = r.subschemas.as_ref()?;
        sub.all_of
            .iter()
            .flatten()
            .find_map(|s| self.description(s))
    }

    pub fn check_root(&mut self, node: &Sp<Node>) {
        self.check_texts(node, "");
        let root = &self.root.schema;
        self.check_object(node, root, "");
    }

    /// The text pass: every string and key in the document, whatever the
    /// schema says of it (all of them reach the report's copy of the
    /// scenario). The schema pass then skips what this one reported, as
    /// its messages would quote the text back.
    fn check_texts(&mut self, node: &Sp<Node>, path: &str) {
        match node.get() {
            Node::Str(s) => self.check_text(s, node.span(), path, "value"),
            Node::Array(items) => {
                for (i, it) in items.iter().enumerate() {
                    self.check_texts(it, &format!("{path}[{i}]"));
                }
            }
            Node::Table(entries) => {
                for (k, v) in entries {
                    let child = join(path, k.get());
                    self.check_text(k.get(), k.span(), &child, "key");
                    self.check_texts(v, &child);
                }
            }
            Node::Int(_) | Node::Float(_) | Node::Bool | Node::Datetime => {}
        }
    }

    fn check(&mut self, node: &Sp<Node>, schema: &Schema, path: &str) {
        if let Schema::Object(o) = schema {
            self.check_object(node, o, path);
        }
    }

    fn check_object(&mut self, node: &Sp<Node>, obj: &SchemaObject, path: &str) {
        if let Node::Str(s) = node.get() {
            if unsafe_char(s).is_some() {
                // Reported by the text pass.
                return;
            }
        }
        let Some((o, def_name)) = self.resolve(obj) else {
            return;
        };
        if let Some(sub) = &o.subschemas {
            if let Some(all) = &sub.all_of {
                for s in all {
                    self.check(node, s, path);
                }
            }
            if let Some(alts) = sub.any_of.as_ref().or(sub.one_of.as_ref()) {
                self.check_alternatives(node, alts, obj, path);
                return;
            }
        }
        let types = types_of(o);
        if !types.is_empty() && !types.iter().any(|t| node.get().matches(*t)) {
            let hint = self
                .type_hint(node.get(), o, &types, path)
                .or_else(|| obj.metadata.as_ref().and_then(|m| m.description.clone()));
            self.wrong_type(node, &types, path, hint);
            return;
        }
        match node.get() {
            Node::Str(s) => self.check_string(s, node.span(), o, path),
            Node::Int(_) | Node::Float(_) => self.check_number(node, o, obj, path),
            Node::Array(items) => {
                if let Some(arr) = &o.array {
                    if let Some(SingleOrVec::Single(item)) = &arr.items {
                        for (i, it) in items.iter().enumerate() {
                            self.check(it, item, &format!("{path}[{i}]"));
                        }
                    }
                }
            }
            Node::Table(entries) => self.check_table(node.span(), entries, o, def_name, path),
            Node::Bool | Node::Datetime => {}
        }
    }

    /// A value of the wrong type; without a better hint, how to write
    /// one of the expected types.
    fn wrong_type(
        &mut self,
        node: &Sp<Node>,
        expected: &[InstanceType],
        path: &str,
        hint: Option<String>,
    ) {
        let mut labels: Vec<&str> = expected.iter().map(|t| type_label(*t)).collect();
        labels.dedup();
        let message = format!(
            "expected {}, found {}",
            or_list(&labels),
            node.get().type_name()
        );
        let hint = hint.unwrap_or_else(|| {
            let mut shapes: Vec<&str> = expected.iter().map(|t| type_shape(*t)).collect();
            shapes.dedup();
            format!("write {}", or_list(&shapes))
        });
        self.report(
            ProblemKind::WrongType,
            node.span(),
            path,
            message,
            Some(hint),
        );
    }

    /// anyOf / oneOf: a documented enum (one branch per value), or a choice
    /// of shapes (a rate string or a ramp table).
    fn check_alternatives(
        &mut self,
        node: &Sp<Node>,
        alts: &[Schema],
        outer: &SchemaObject,
        path: &str,
    ) {
        let fits: Vec<&Schema> = alts
            .iter()
            .filter(|s| {
                self.accepted_types(s)
                    .into_iter()
                    .any(|t| node.get().matches(t))
            })
            .collect();
        if fits.is_empty() {
            let types: Vec<InstanceType> =
                alts.iter().flat_map(|s| self.accepted_types(s)).collect();
            let allowed = self.enum_values(alts.iter());
            let hint = outer
                .metadata
                .as_ref()
                .and_then(|m| m.description.clone())
                .or_else(|| {
                    allowed.map(|values| {
                        let names: Vec<&str> = values.iter().filter_map(|v| v.as_str()).collect();
                        format!("one of: {}", names.join(", "))
                    })
                })
                .or_else(|| alts.iter().find_map(|s| self.description(s)));
            self.wrong_type(node, &types, path, hint);
            return;
        }
        // A string against branches that are all fixed values: one list.
        let enums = self.enum_values(fits.iter().copied());
        if let (Node::Str(s), Some(values)) = (node.get(), enums) {
            let merged = SchemaObject {
                enum_values: Some(values),
                ..Default::default()
            };
            self.check_string(s, node.span(), &merged, path);
            return;
        }
        self.check(node, fits[0], path);
    }

    /// The values of branches that are all fixed values (a documented
    /// enum); `None` when one of them is a shape.
    fn enum_values<'s>(
        &self,
        branches: impl Iterator<Item = &'s Schema>,
    ) -> Option<Vec<serde_json::Value>>
    where
        'a: 's,
    {
        branches
            .map(|s| match s {
                Schema::Object(o) => self.resolve(o).and_then(|(o, _)| o.enum_values.clone()),
                Schema::Bool(_) => None,
            })
            .try_fold(Vec::new(), |mut acc, e| {
                acc.extend(e?);
                Some(acc)
            })
    }

    fn type_hint(
        &self,
        node: &Node,
        o: &SchemaObject,
        types: &[InstanceType],
        path: &str,
    ) -> Option<String> {
        let wants_number = types
            .iter()
            .any(|t| matches!(t, InstanceType::Integer | InstanceType::Number));
        match node {
            Node::Table(_) if types.contains(&InstanceType::Array) => {
                return Some(format!("write [[{path}]] (double brackets) once per entry"))
            }
            Node::Array(_) if types.contains(&InstanceType::Object) => {
                return Some(format!("write [{path}] (single brackets): there is one"))
            }
            Node::Datetime if types.contains(&InstanceType::String) => {
                return Some("quote it: \"2026-03-27T08:00\"".to_string())
            }
            Node::Str(s) if wants_number && s.trim().parse::<f64>().is_ok() => {
                return Some(format!("remove the quotes: {}", s.trim()))
            }
            Node::Str(s)
                if types.contains(&InstanceType::Boolean) && (s == "true" || s == "false") =>
            {
                return Some(format!("remove the quotes: {s}"));
            }
            Node::Float(_) if types == [InstanceType::Integer] => {
                return Some("use a whole number".to_string())
            }
            Node::Int(_) | Node::Float(_) if types.contains(&InstanceType::String) => {
                let n = node.as_f64().unwrap_or_default();
                match o.format.as_deref() {
                    Some(format::DURATION) => {
                        return Some(format!(
                            "durations are quoted and have a unit, e.g. \"{n}s\""
                        ))
                    }
                    Some(format::RATE) => {
                        return Some(format!("rates are quoted and have a unit, e.g. \"{n}/s\""))
                    }
                    _ => {}
                }
            }
            Node::Str(s) if types.contains(&InstanceType::Array) => {
                return Some(format!("put it in brackets: [\"{s}\"]"))
            }
            _ => {}
        }
        o.metadata.as_ref().and_then(|m| m.description.clone())
    }

    /// Reports text that must not reach file names, logs or reports.
    fn check_text(&mut self, s: &str, span: Range<usize>, path: &str, what: &str) {
        let Some((at, c)) = unsafe_char(s) else {
            return;
        };
        self.report(
            ProblemKind::UnsafeText,
            span,
            path,
            format!(
                "the {what} holds {} (U+{:04X}) at character {}",
                unsafe_char_name(c),
                u32::from(c),
                at + 1
            ),
            Some(UNSAFE_TEXT_HINT.to_string()),
        );
    }

    fn check_string(&mut self, s: &str, span: Range<usize>, o: &SchemaObject, path: &str) {
        if let Some(values) = &o.enum_values {
            let allowed: Vec<&str> = values.iter().filter_map(|v| v.as_str()).collect();
            if !allowed.contains(&s) {
                let hint = match suggest(s, allowed.iter().copied()) {
                    Some(x) => format!("did you mean `{x}`?"),
                    None => format!("one of: {}", allowed.join(", ")),
                };
                self.report(
                    ProblemKind::BadValue,
                    span,
                    path,
                    format!("`{s}` is not one of {}", or_list(&allowed)),
                    Some(hint),
                );
            }
            return;
        }
        let result = match o.format.as_deref() {
            Some(format::DURATION) => units::parse_duration(s)
                .map(drop)
                .map_err(|e| (ProblemKind::BadDuration, e)),
            Some(format::RATE) => units::parse_rate(s)
                .map(drop)
                .map_err(|e| (ProblemKind::BadRate, e)),
            Some(format::TIME_OF_DAY) => units::parse_time_of_day(s)
                .map(drop)
                .map_err(|e| (ProblemKind::BadTime, e)),
            Some(format::DAILY_WINDOW) => units::parse_window(s)
                .map(drop)
                .map_err(|e| (ProblemKind::BadTime, e)),
            Some(format::TIME_ZONE) => units::check_time_zone(s).map_err(|mut e| {
                if let Some(near) = nearest_time_zone(s) {
                    e.hint = format!("did you mean `{near}`?");
                }
                (ProblemKind::UnknownTimeZone, e)
            }),
            Some(format::LOCAL_DATE_TIME) => s
                .trim()
                .replace(' ', "T")
                .parse::<jiff::civil::DateTime>()
                .map(drop)
                .map_err(|_| {
                    (
                        ProblemKind::BadValue,
                        units::UnitError {
                            message: format!("`{s}` is not a local date and time"),
                            hint: "write it like '2026-03-27T08:00'".to_string(),
                        },
                    )
                }),
            _ => Ok(()),
        };
        if let Err((kind, e)) = result {
            self.report(kind, span, path, e.message, Some(e.hint));
        }
    }

    fn check_number(
        &mut self,
        node: &Sp<Node>,
        o: &SchemaObject,
        outer: &SchemaObject,
        path: &str,
    ) {
        let Some(v) = node.get().as_f64() else {
            return;
        };
        let is_int = types_of(o).contains(&InstanceType::Integer);
        if is_int && matches!(node.get(), Node::Float(_)) {
            self.report(
                ProblemKind::WrongType,
                node.span(),
                path,
                format!("expected a whole number, found {v}"),
                Some("use a whole number".to_string()),
            );
            return;
        }
        let (fmin, fmax) = match o.format.as_deref() {
            Some("uint8") => (0.0, u8::MAX as f64),
            Some("uint16") => (0.0, u16::MAX as f64),
            Some("uint32") => (0.0, u32::MAX as f64),
            Some("uint64" | "uint") => (0.0, f64::INFINITY),
            _ => (f64::NEG_INFINITY, f64::INFINITY),
        };
        let nv = o.number.as_deref();
        let min = nv.and_then(|n| n.minimum).unwrap_or(fmin).max(fmin);
        let max = nv.and_then(|n| n.maximum).unwrap_or(fmax).min(fmax);
        if !v.is_finite() || v < min || v > max {
            let range = match (min.is_finite(), max.is_finite()) {
                (true, true) => format!("between {min} and {max}"),
                (true, false) => format!("at least {min}"),
                (false, true) => format!("at most {max}"),
                (false, false) => "a finite number".to_string(),
            };
            let hint = outer
                .metadata
                .as_ref()
                .or(o.metadata.as_ref())
                .and_then(|m| m.description.clone());
            self.report(
                ProblemKind::BadValue,
                node.span(),
                path,
                format!("{v} is out of range: must be {range}"),
                hint,
            );
        }
    }

    fn check_table(
        &mut self,
        span: Range<usize>,
        entries: &[(Sp<String>, Sp<Node>)],
        o: &SchemaObject,
        def_name: Option<&str>,
        path: &str,
    ) {
        let Some(ov) = &o.object else {
            return;
        };
        let known: Vec<&str> = ov.properties.keys().map(String::as_str).collect();
        for (k, v) in entries {
            let child = join(path, k.get());
            if unsafe_char(k.get()).is_some() {
                // Reported by the text pass.
                continue;
            }
            if let Some(s) = ov.properties.get(k.get()) {
                if is_threshold(s) {
                    self.check_threshold(k, v, &child);
                } else {
                    self.check(v, s, &child);
                }
                continue;
            }
            match ov.additional_properties.as_deref() {
                Some(Schema::Bool(false)) => {
                    let hint = match suggest(k.get(), known.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("known fields here: {}", known.join(", ")),
                    };
                    self.report(
                        ProblemKind::UnknownField,
                        k.span(),
                        &child,
                        format!("unknown field `{}`", k.get()),
                        Some(hint),
                    );
                }
                Some(s) if is_threshold(s) => self.check_threshold(k, v, &child),
                Some(s @ Schema::Object(_)) => self.check(v, s, &child),
                _ => {}
            }
        }
        for req in &ov.required {
            if !entries.iter().any(|(k, _)| k.get() == req) {
                let hint = ov.properties.get(req).and_then(|s| self.description(s));
                self.report(
                    ProblemKind::MissingField,
                    span.clone(),
                    &join(path, req),
                    format!("missing field `{req}`"),
                    hint,
                );
            }
        }
        if let Some((_, what)) = SUM_TO_ONE.iter().find(|(d, _)| Some(*d) == def_name) {
            self.check_sum(span, entries, what, path);
        }
    }

    fn check_sum(
        &mut self,
        span: Range<usize>,
        entries: &[(Sp<String>, Sp<Node>)],
        what: &str,
        path: &str,
    ) {
        let parts: Vec<(&str, f64)> = entries
            .iter()
            .filter_map(|(k, v)| Some((k.get().as_str(), v.get().as_f64()?)))
            .collect();
        if let Some(msg) = sum_to_one_problem(&parts) {
            self.report(
                ProblemKind::MixSum,
                span,
                path,
                format!("the {what} {msg}"),
                Some(format!(
                    "{}; the fractions must add up to 1",
                    parts
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(" + ")
                )),
            );
        }
    }

    fn check_threshold(&mut self, key: &Sp<String>, value: &Sp<Node>, path: &str) {
        let Node::Str(expr) = value.get() else {
            self.report(
                ProblemKind::WrongType,
                value.span(),
                path,
                format!("expected a string, found {}", value.get().type_name()),
                Some("thresholds are quoted, e.g. \"< 25ms\" or \"== 0\"".to_string()),
            );
            return;
        };
        if let Err(e) = Threshold::parse(key.get(), expr) {
            let span = if e.in_metric {
                key.span()
            } else {
                value.span()
            };
            self.report(
                ProblemKind::BadThreshold,
                span,
                path,
                e.message,
                Some(e.hint),
            );
        }
    }
}

/// A threshold expression, checked with its metric name (the key).
fn is_threshold(s: &Schema) -> bool {
    matches!(s, Schema::Object(o) if o.format.as_deref() == Some(format::THRESHOLD))
}

/// Tolerance for fractions written with a few decimals (0.7 + 0.2 + 0.1).
const SUM_TOLERANCE: f64 = 1e-6;

/// `None` when the fractions add up to 1; otherwise the complaint.
pub(crate) fn sum_to_one_problem(parts: &[(&str, f64)]) -> Option<String> {
    let sum: f64 = parts.iter().map(|(_, v)| v).sum();
    if (sum - 1.0).abs() <= SUM_TOLERANCE {
        return None;
    }
    // Round for display: 0.7 + 0.05 + 0.2 prints as 0.95, not 0.9500000000000001.
    let shown = (sum * 1e6).round() / 1e6;
    Some(format!("adds up to {shown}, not 1"))
}

/// The time zone name closest to a misspelt one.
fn nearest_time_zone(name: &str) -> Option<String> {
    let names: Vec<String> = jiff::tz::db().available().map(|n| n.to_string()).collect();
    suggest(name, names.iter().map(String::as_str)).map(str::to_string)
}

/// Why scenario text must be printable, shown with every refusal.
const UNSAFE_TEXT_HINT: &str = "scenario text reaches file names, logs and reports, so it must be \
     printable on one line: remove the character (write a space for a tab or a line break)";

/// The first character (0-based char index and the char) that scenario
/// text may not hold: C0 controls (NUL, tab and line breaks included),
/// DEL, C1 controls, and the bidirectional embeddings, overrides and
/// isolates (U+202A-U+202E, U+2066-U+2069) that make a terminal or a
/// report show text in another order than it is stored.
pub(crate) fn unsafe_char(s: &str) -> Option<(usize, char)> {
    s.chars().enumerate().find(|(_, c)| is_unsafe(*c))
}

pub(crate) fn is_unsafe(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1F}' | '\u{7F}'..='\u{9F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn unsafe_char_name(c: char) -> &'static str {
    match c {
        '\0' => "a NUL character",
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => "a bidirectional text control",
        _ => "a control character",
    }
}
