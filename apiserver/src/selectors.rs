//! Label selectors (`?labelSelector=`) and field selectors (`?fieldSelector=`), parsed and
//! matched like upstream (`k8s.io/apimachinery/pkg/labels` and `.../fields`).
//!
//! - [`LabelSelector::parse`] implements `labels.Parse`: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
//!   `a notin (x)`, `a`, `!a`, `a>1`, `a<1`, comma-separated (AND); keys and values validated.
//!   [`LabelSelector::from_json`] converts a `metav1.LabelSelector` (`matchLabels` /
//!   `matchExpressions`) into the same type.
//! - [`FieldSelector::parse`] implements `fields.ParseSelector` plus the per-kind field label
//!   conversion (which fields a kind supports); [`FieldSelector::matches`] reads the field values
//!   from the object's JSON the way upstream's `GetAttrs` / `ToSelectableFields` do.
//!
//! A parse error is a [`SelectorError`] whose message is upstream's; the server answers it as a
//! 400 `BadRequest`.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;
use skiff_api::Kind;
use skiff_api::validation::names;

/// A selector that could not be parsed, or names a field the kind does not support.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

impl SelectorError {
    fn new(msg: impl Into<String>) -> Self {
        SelectorError(msg.into())
    }
}

// ---------------------------------------------------------------------------------------------
// Validation (k8s.io/apimachinery/pkg/util/validation, shared with skiff-api)
// ---------------------------------------------------------------------------------------------

fn validate_label_key(key: &str) -> Result<(), SelectorError> {
    let errs = names::qualified_name(key);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "key: Invalid value: \"{key}\": {}",
            errs.join("; ")
        )))
    }
}

fn validate_label_value(index: usize, value: &str) -> Result<(), SelectorError> {
    let errs = names::label_value(value);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "values[{index}]: Invalid value: \"{value}\": {}",
            errs.join("; ")
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------------

/// A label selector operator (upstream `selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `=`
    Equals,
    /// `==`
    DoubleEquals,
    /// `!=`
    NotEquals,
    /// `in (...)`
    In,
    /// `notin (...)`
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>N`
    GreaterThan,
    /// `key<N`
    LessThan,
}

/// One requirement of a label selector: `key op values`. `values` are sorted and distinct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    /// Upstream `labels.NewRequirement`: validates key, operator arity and values.
    pub fn new(
        key: &str,
        operator: Operator,
        mut values: Vec<String>,
    ) -> Result<Requirement, SelectorError> {
        validate_label_key(key)?;
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    return Err(SelectorError::new(
                        "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty",
                    ));
                }
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
                if values.len() != 1 {
                    return Err(SelectorError::new(
                        "values: Invalid value: exact-match compatibility requires one single value",
                    ));
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    return Err(SelectorError::new(
                        "values: Invalid value: values set must be empty for exists and does not exist",
                    ));
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return Err(SelectorError::new(
                        "values: Invalid value: for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        return Err(SelectorError(format!(
                            "values[{i}]: Invalid value: \"{v}\": for 'Gt', 'Lt' operators, the value must be an integer"
                        )));
                    }
                }
            }
        }
        for (i, v) in values.iter().enumerate() {
            validate_label_value(i, v)?;
        }
        values.sort();
        values.dedup();
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    /// Upstream `Requirement.Matches`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                value.is_some_and(|v| self.values.contains(v))
            }
            Operator::NotIn | Operator::NotEquals => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(have) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let Some(want) = self.values.first().and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one = self.values.first().map_or("", String::as_str);
        match self.operator {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Equals => write!(f, "{}={one}", self.key),
            Operator::DoubleEquals => write!(f, "{}=={one}", self.key),
            Operator::NotEquals => write!(f, "{}!={one}", self.key),
            Operator::GreaterThan => write!(f, "{}>{one}", self.key),
            Operator::LessThan => write!(f, "{}<{one}", self.key),
            Operator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
        }
    }
}

/// A parsed label selector: the AND of its requirements, sorted by key. Empty = everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Error,
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

/// Upstream's lexer: splits the selector into (token, literal) pairs, ending with EndOfString.
fn lex(input: &str) -> Vec<(Token, String)> {
    let chars: Vec<char> = input.chars().collect();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < chars.len() && is_whitespace(chars[pos]) {
            pos += 1;
        }
        let Some(&c) = chars.get(pos) else {
            out.push((Token::EndOfString, String::new()));
            return out;
        };
        if is_special(c) {
            let mut buffer = String::new();
            let mut last: Option<(Token, String)> = None;
            while let Some(&c) = chars.get(pos) {
                if !is_special(c) {
                    break;
                }
                buffer.push(c);
                if let Some(tok) = keyword(&buffer) {
                    last = Some((tok, buffer.clone()));
                    pos += 1;
                } else if last.is_some() {
                    break;
                } else {
                    pos += 1;
                }
            }
            match last {
                Some(t) => out.push(t),
                None => out.push((
                    Token::Error,
                    format!("error expected: keyword found '{buffer}'"),
                )),
            }
        } else {
            let start = pos;
            while pos < chars.len() && !is_whitespace(chars[pos]) && !is_special(chars[pos]) {
                pos += 1;
            }
            let word: String = chars[start..pos].iter().collect();
            let tok = keyword(&word).unwrap_or(Token::Identifier);
            out.push((tok, word));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Token, String)>,
    position: usize,
}

impl Parser {
    fn get(&self, index: usize, context: Context) -> (Token, String) {
        let (tok, lit) = self
            .items
            .get(index)
            .cloned()
            .unwrap_or((Token::EndOfString, String::new()));
        let tok = match (context, tok) {
            (Context::Values, Token::In | Token::NotIn) => Token::Identifier,
            (_, t) => t,
        };
        (tok, lit)
    }

    fn lookahead(&self, context: Context) -> (Token, String) {
        self.get(self.position, context)
    }

    fn consume(&mut self, context: Context) -> (Token, String) {
        let item = self.get(self.position, context);
        self.position += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Context::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self.parse_requirement().map_err(|e| {
                        SelectorError(format!("unable to parse requirement: {}", e.0))
                    })?;
                    requirements.push(r);
                    let (t, l) = self.consume(Context::Values);
                    match t {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (t2, l2) = self.lookahead(Context::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(SelectorError(format!(
                                    "found '{l2}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(SelectorError(format!(
                                "found '{l}', expected: ',' or 'end of string'"
                            )));
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(SelectorError(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    )));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        if let Some(op @ (Operator::Exists | Operator::DoesNotExist)) = inferred {
            return Requirement::new(&key, op, Vec::new());
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, operator, values)
    }

    fn parse_key_and_infer_operator(
        &mut self,
    ) -> Result<(String, Option<Operator>), SelectorError> {
        let mut operator = None;
        let (mut tok, mut lit) = self.consume(Context::Values);
        if tok == Token::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(SelectorError(format!(
                "found '{lit}', expected: identifier"
            )));
        }
        validate_label_key(&lit)?;
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::EndOfString || next == Token::Comma) && operator.is_none() {
            operator = Some(Operator::Exists);
        }
        Ok((lit, operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, SelectorError> {
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(SelectorError(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                )));
            }
        })
    }

    fn parse_values(&mut self) -> Result<Vec<String>, SelectorError> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(SelectorError(format!("found '{lit}' expected: '('")));
        }
        let (tok, lit) = self.lookahead(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let (tok, _) = self.consume(Context::Values);
                if tok != Token::ClosedPar {
                    return Err(SelectorError(format!("found '{lit}', expected: ')'")));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(SelectorError(format!(
                "found '{lit}', expected: ',', ')' or identifier"
            ))),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, SelectorError> {
        let mut values: Vec<String> = Vec::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    values.push(lit);
                    let (tok2, lit2) = self.lookahead(Context::Values);
                    match tok2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        _ => {
                            return Err(SelectorError(format!(
                                "found '{lit2}', expected: ',' or ')'"
                            )));
                        }
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    let (tok2, _) = self.lookahead(Context::Values);
                    if tok2 == Token::ClosedPar {
                        values.push(String::new());
                        return Ok(values);
                    }
                    if tok2 == Token::Comma {
                        self.consume(Context::Values);
                        values.push(String::new());
                    }
                }
                _ => {
                    return Err(SelectorError(format!(
                        "found '{lit}', expected: ',', or identifier"
                    )));
                }
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, SelectorError> {
        let (tok, _) = self.lookahead(Context::Values);
        if tok == Token::EndOfString || tok == Token::Comma {
            return Ok(vec![String::new()]);
        }
        let (tok, lit) = self.consume(Context::Values);
        if tok == Token::Identifier {
            Ok(vec![lit])
        } else {
            Err(SelectorError(format!(
                "found '{lit}', expected: identifier"
            )))
        }
    }
}

impl LabelSelector {
    /// The selector that matches everything (what `""` parses to).
    pub fn everything() -> LabelSelector {
        LabelSelector::default()
    }

    /// Parse a selector string like upstream `labels.Parse`.
    pub fn parse(selector: &str) -> Result<LabelSelector, SelectorError> {
        let mut parser = Parser {
            items: lex(selector),
            position: 0,
        };
        let mut requirements = parser.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Build a selector from a `metav1.LabelSelector` JSON object (`matchLabels`,
    /// `matchExpressions` with operators `In`, `NotIn`, `Exists`, `DoesNotExist`), like upstream
    /// `metav1.LabelSelectorAsSelector`. `null` or `{}` gives the everything selector.
    pub fn from_json(selector: &Value) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                let v = v.as_str().unwrap_or_default().to_string();
                requirements.push(Requirement::new(k, Operator::Equals, vec![v])?);
            }
        }
        if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|vs| {
                        vs.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                    "In" => Operator::In,
                    "NotIn" => Operator::NotIn,
                    "Exists" => Operator::Exists,
                    "DoesNotExist" => Operator::DoesNotExist,
                    other => {
                        return Err(SelectorError(format!(
                            "{other:?} is not a valid label selector operator"
                        )));
                    }
                };
                requirements.push(Requirement::new(key, op, values)?);
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Does this selector select everything (no requirements)?
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Do these labels satisfy every requirement?
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Does the object (its `metadata.labels`) satisfy every requirement?
    pub fn matches_object(&self, object: &Value) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        self.matches(&object_labels(object))
    }
}

impl fmt::Display for LabelSelector {
    /// Upstream `Selector.String()`: requirements joined by `,` (empty for everything).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// An object's `metadata.labels` (non-string values skipped).
pub fn object_labels(object: &Value) -> BTreeMap<String, String> {
    object
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------------------------

/// One term of a field selector: `field=value` (`equal`) or `field!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    pub value: String,
    pub equal: bool,
}

/// A parsed field selector: the AND of its terms (sorted like upstream). Empty = everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSelector {
    kind: Kind,
    terms: Vec<FieldTerm>,
}

const META_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];
const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
];
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];
const NAMESPACE_FIELDS: &[&str] = &["status.phase", "metadata.name"];
const SECRET_FIELDS: &[&str] = &["type", "metadata.namespace", "metadata.name"];
const SERVICE_FIELDS: &[&str] = &[
    "metadata.namespace",
    "metadata.name",
    "spec.clusterIP",
    "spec.type",
];
const NODE_FIELDS: &[&str] = &["metadata.name", "spec.unschedulable"];
const REPLICASET_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "status.replicas"];

/// The field labels a kind supports in field selectors (upstream's
/// `AddFieldLabelConversionFunc` per kind; `metadata.name` and `metadata.namespace` otherwise).
pub fn supported_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Pod => POD_FIELDS,
        Kind::Event => EVENT_FIELDS,
        Kind::Namespace => NAMESPACE_FIELDS,
        Kind::Secret => SECRET_FIELDS,
        Kind::Service => SERVICE_FIELDS,
        Kind::Node => NODE_FIELDS,
        Kind::ReplicaSet => REPLICASET_FIELDS,
        _ => META_FIELDS,
    }
}

/// Upstream's field label conversion: the (possibly renamed) label, or its error.
fn convert_field_label(kind: Kind, label: &str) -> Result<String, SelectorError> {
    if kind == Kind::Pod && label == "spec.host" {
        // Backwards compatibility with old v1 clients.
        return Ok("spec.nodeName".to_string());
    }
    let fields = supported_fields(kind);
    if fields.contains(&label) {
        return Ok(label.to_string());
    }
    if std::ptr::eq(fields, META_FIELDS) {
        Err(SelectorError(format!(
            "\"{label}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        )))
    } else {
        Err(SelectorError(format!("field label not supported: {label}")))
    }
}

/// Split on commas not escaped by a backslash (upstream `splitTerms`).
fn split_terms(selector: &str) -> Vec<String> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in selector.chars() {
        if escaped {
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            current.push(c);
            escaped = true;
        } else if c == ',' {
            terms.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    terms.push(current);
    terms
}

/// Split a term at its first operator, trying `!=`, `==`, `=` at each position (upstream
/// `splitTerm`).
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], op, rhs));
            }
        }
    }
    None
}

/// Upstream `fields.UnescapeValue`: `\\`, `\,`, `\=` are the only escapes; a bare `,` or `=`
/// is an error.
fn unescape_value(s: &str) -> Result<String, SelectorError> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_escape = false;
    for c in s.chars() {
        if in_escape {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => {
                    return Err(SelectorError(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    )));
                }
            }
            in_escape = false;
            continue;
        }
        match c {
            '\\' => in_escape = true,
            ',' | '=' => {
                return Err(SelectorError(format!(
                    "invalid field selector: unescaped character in value: {c}"
                )));
            }
            _ => out.push(c),
        }
    }
    if in_escape {
        return Err(SelectorError::new(
            "invalid field selector: invalid escape sequence: \\",
        ));
    }
    Ok(out)
}

impl FieldSelector {
    /// The selector that matches everything.
    pub fn everything(kind: Kind) -> FieldSelector {
        FieldSelector {
            kind,
            terms: Vec::new(),
        }
    }

    /// Parse a field selector for `kind`: `f=v`, `f==v`, `f!=v`, comma-separated (AND), values
    /// may escape `\,`, `\=`, `\\`. Each field must be one the kind supports
    /// ([`supported_fields`]), else the error is upstream's (`field label not supported: f`).
    pub fn parse(selector: &str, kind: Kind) -> Result<FieldSelector, SelectorError> {
        let mut parts = split_terms(selector);
        parts.sort();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((lhs, op, rhs)) = split_term(&part) else {
                return Err(SelectorError(format!(
                    "invalid selector: '{selector}'; can't understand '{part}'"
                )));
            };
            let value = unescape_value(rhs)?;
            let field = convert_field_label(kind, lhs.trim())?;
            terms.push(FieldTerm {
                field,
                value,
                equal: op != "!=",
            });
        }
        Ok(FieldSelector { kind, terms })
    }

    /// The terms, in upstream's (sorted) order.
    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    /// Does this selector select everything (no terms)?
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Does the object satisfy every term? Fields are read from the JSON: a missing field is
    /// `""`, booleans are `"true"`/`"false"`, numbers their decimal form.
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|t| {
            let have = field_value(self.kind, object, &t.field);
            (have == t.value) == t.equal
        })
    }

    /// `Some(X)` when the selector requires `metadata.name=X` (upstream `RequiresExactMatch`);
    /// the server uses it for single-object lists and watches.
    pub fn single_name(&self) -> Option<&str> {
        self.exact_match("metadata.name")
    }

    /// `Some(X)` when the selector requires `field=X`.
    pub fn exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.equal && t.field == field)
            .map(|t| t.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let value = t
                .value
                .replace('\\', "\\\\")
                .replace(',', "\\,")
                .replace('=', "\\=");
            let op = if t.equal { "=" } else { "!=" };
            write!(f, "{}{op}{value}", t.field)?;
        }
        Ok(())
    }
}

/// Follow a dotted path through the JSON.
fn lookup<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(object, |v, key| v.get(key))
}

/// A JSON scalar as a field value: strings as is, booleans `true`/`false`, numbers decimal,
/// anything else (missing, null, objects) empty.
fn scalar(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn str_at(object: &Value, path: &str) -> String {
    scalar(lookup(object, path))
}

/// The value of a (supported, converted) field label for `kind`, the way upstream's
/// `ToSelectableFields` computes it.
pub fn field_value(kind: Kind, object: &Value, field: &str) -> String {
    match (kind, field) {
        (_, "metadata.name" | "metadata.namespace") => str_at(object, field),
        (Kind::Pod, "spec.hostNetwork") | (Kind::Node, "spec.unschedulable") => {
            lookup(object, field)
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string()
        }
        (Kind::Pod, "status.podIP") => lookup(object, "status.podIPs")
            .and_then(Value::as_array)
            .and_then(|ips| ips.first())
            .map(|ip| str_at(ip, "ip"))
            .unwrap_or_else(|| str_at(object, "status.podIP")),
        // Accepted by upstream's conversion but not in its field set: always empty.
        (Kind::Pod, "status.podIPs") => String::new(),
        (Kind::ReplicaSet, "status.replicas") => lookup(object, field)
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .to_string(),
        (Kind::Event, "reportingComponent") => str_at(object, "reportingComponent"),
        (Kind::Event, "source") => {
            let component = str_at(object, "source.component");
            if component.is_empty() {
                str_at(object, "reportingComponent")
            } else {
                component
            }
        }
        _ => str_at(object, field),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        LabelSelector::parse(s).unwrap_err().0
    }

    #[test]
    fn empty_selects_everything() {
        let s = sel("");
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[])));
        assert!(s.matches_object(&json!({})));
        assert!(sel("   ").is_empty());
    }

    #[test]
    fn equality_operators() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(sel("app=web").matches(&l));
        assert!(sel("app==web").matches(&l));
        assert!(!sel("app=db").matches(&l));
        assert!(sel("app!=db").matches(&l));
        assert!(!sel("app!=web").matches(&l));
        assert!(sel("missing!=x").matches(&l));
        assert!(!sel("missing=x").matches(&l));
        assert!(sel("app=web,tier=front").matches(&l));
        assert!(!sel("app=web,tier=back").matches(&l));
        assert!(sel(" app = web , tier == front ").matches(&l));
        // `a=` means the empty value.
        assert!(sel("empty=").matches(&labels(&[("empty", "")])));
        assert!(!sel("empty=").matches(&labels(&[])));
    }

    #[test]
    fn set_operators() {
        let l = labels(&[("env", "prod")]);
        assert!(sel("env in (prod,staging)").matches(&l));
        assert!(sel("env in (prod, staging)").matches(&l));
        assert!(!sel("env in (dev)").matches(&l));
        assert!(sel("env notin (dev,qa)").matches(&l));
        assert!(!sel("env notin (prod)").matches(&l));
        assert!(sel("other notin (prod)").matches(&l));
        assert!(!sel("other in (prod)").matches(&l));
        // `in` and `notin` are ordinary identifiers in value position.
        assert!(sel("x in (in,notin)").matches(&labels(&[("x", "in")])));
        // Empty value lists.
        assert!(sel("x in ()").matches(&labels(&[("x", "")])));
        assert!(sel("x in (,a)").matches(&labels(&[("x", "")])));
        assert_eq!(sel("x in (b,a,b)").requirements()[0].values, vec!["a", "b"]);
    }

    #[test]
    fn existence_operators() {
        let l = labels(&[("app", "web")]);
        assert!(sel("app").matches(&l));
        assert!(!sel("db").matches(&l));
        assert!(sel("!db").matches(&l));
        assert!(!sel("!app").matches(&l));
        assert!(sel("app,!db").matches(&l));
        assert!(sel("!db, app").matches(&l));
    }

    #[test]
    fn numeric_operators() {
        let l = labels(&[("n", "5"), ("s", "x")]);
        assert!(sel("n>3").matches(&l));
        assert!(!sel("n>5").matches(&l));
        assert!(sel("n<6").matches(&l));
        assert!(!sel("s>1").matches(&l));
        assert!(!sel("m<1").matches(&l));
        assert!(err("n>x").contains("must be an integer"));
    }

    #[test]
    fn qualified_keys() {
        let l = labels(&[("app.kubernetes.io/name", "web")]);
        assert!(sel("app.kubernetes.io/name=web").matches(&l));
        assert!(
            sel("kubernetes.io/service-name")
                .matches(&labels(&[("kubernetes.io/service-name", "x")]))
        );
    }

    #[test]
    fn parse_errors() {
        assert_eq!(err("a=b,"), "found '', expected: identifier after ','");
        assert_eq!(err("a=b c"), "found 'c', expected: ',' or 'end of string'");
        assert_eq!(
            err("=b"),
            "found '=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            err("a in b"),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            err("a in (b"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            err("a b"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert!(err("!a=b").contains("expected: ',' or 'end of string'"));
        assert!(err("-a=b").contains("name part must consist of alphanumeric"));
        assert!(err("a=-b").contains("a valid label must be an empty string"));
        assert!(err("Example.com/a=b").contains("prefix part a lowercase RFC 1123 subdomain"));
        assert!(err("/a").contains("prefix part must be non-empty"));
        assert!(err("a/b/c").contains("a qualified name must consist"));
        let long = "a".repeat(64);
        assert!(err(&format!("x={long}")).contains("must be no more than 63 characters"));
        assert!(err(&format!("{long}=x")).contains("name part must be no more than 63"));
    }

    #[test]
    fn display_is_upstream_string() {
        assert_eq!(
            sel("b in (y,x),a=1,!c,d").to_string(),
            "a=1,b in (x,y),!c,d"
        );
        assert_eq!(sel("").to_string(), "");
    }

    #[test]
    fn matches_object_reads_metadata_labels() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web"}}});
        assert!(sel("app=web").matches_object(&pod));
        assert!(!sel("app=db").matches_object(&pod));
        assert!(sel("!app2").matches_object(&json!({"metadata": {}})));
    }

    #[test]
    fn from_json_label_selector() {
        let s = LabelSelector::from_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "gone", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert_eq!(s.to_string(), "app=web,!gone,tier in (a,b)");
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(LabelSelector::from_json(&json!(null)).unwrap().is_empty());
        assert!(
            LabelSelector::from_json(
                &json!({"matchExpressions": [{"key": "a", "operator": "Bad"}]})
            )
            .is_err()
        );
    }

    fn fsel(s: &str, kind: Kind) -> FieldSelector {
        FieldSelector::parse(s, kind).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn field_operators() {
        let cm = json!({"metadata": {"name": "a", "namespace": "ns1"}});
        assert!(fsel("", Kind::ConfigMap).matches(&cm));
        assert!(fsel("metadata.name=a", Kind::ConfigMap).matches(&cm));
        assert!(fsel("metadata.name==a", Kind::ConfigMap).matches(&cm));
        assert!(!fsel("metadata.name!=a", Kind::ConfigMap).matches(&cm));
        assert!(fsel("metadata.name!=b", Kind::ConfigMap).matches(&cm));
        assert!(fsel("metadata.name=a,metadata.namespace=ns1", Kind::ConfigMap).matches(&cm));
        assert!(!fsel("metadata.name=a,metadata.namespace=ns2", Kind::ConfigMap).matches(&cm));
        // Empty value matches a missing field.
        assert!(
            fsel("metadata.namespace=", Kind::IngressClass)
                .matches(&json!({"metadata": {"name": "n"}}))
        );
    }

    #[test]
    fn field_errors() {
        assert_eq!(
            FieldSelector::parse("spec.foo=x", Kind::Pod).unwrap_err().0,
            "field label not supported: spec.foo"
        );
        assert_eq!(
            FieldSelector::parse("spec.replicas=1", Kind::Deployment)
                .unwrap_err()
                .0,
            "\"spec.replicas\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
        assert_eq!(
            FieldSelector::parse("metadata.name", Kind::Pod)
                .unwrap_err()
                .0,
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        assert!(
            FieldSelector::parse("metadata.namespace=x", Kind::Node)
                .unwrap_err()
                .0
                .contains("field label not supported")
        );
        assert!(
            FieldSelector::parse("metadata.namespace=x", Kind::Namespace)
                .unwrap_err()
                .0
                .contains("field label not supported")
        );
        assert!(
            FieldSelector::parse("metadata.name=a\\x", Kind::Pod)
                .unwrap_err()
                .0
                .contains("invalid escape sequence")
        );
    }

    #[test]
    fn field_escapes_and_single_name() {
        let s = fsel("metadata.name=a\\,b", Kind::ConfigMap);
        assert_eq!(s.single_name(), Some("a,b"));
        assert!(s.matches(&json!({"metadata": {"name": "a,b"}})));
        assert_eq!(s.to_string(), "metadata.name=a\\,b");
        assert_eq!(
            fsel("metadata.namespace=x,metadata.name=y", Kind::Pod).single_name(),
            Some("y")
        );
        assert_eq!(fsel("metadata.name!=y", Kind::Pod).single_name(), None);
        assert_eq!(fsel("", Kind::Pod).single_name(), None);
    }

    #[test]
    fn pod_fields() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                     "serviceAccountName": "sa", "hostNetwork": true},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
                       "nominatedNodeName": "n2"}
        });
        for s in [
            "spec.nodeName=n1",
            "spec.host=n1",
            "spec.restartPolicy=Always",
            "spec.schedulerName=default-scheduler",
            "spec.serviceAccountName=sa",
            "spec.hostNetwork=true",
            "status.phase=Running",
            "status.podIP=10.0.0.5",
            "status.nominatedNodeName=n2",
            "status.podIPs=",
            "metadata.namespace=default",
        ] {
            assert!(fsel(s, Kind::Pod).matches(&pod), "{s}");
        }
        assert!(!fsel("spec.nodeName=n2", Kind::Pod).matches(&pod));
        let bare = json!({"metadata": {"name": "q"}, "spec": {}});
        assert!(fsel("spec.hostNetwork=false", Kind::Pod).matches(&bare));
        assert!(fsel("spec.nodeName=", Kind::Pod).matches(&bare));
        assert!(fsel("status.phase!=Running", Kind::Pod).matches(&bare));
    }

    #[test]
    fn event_fields() {
        let ev = json!({
            "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p", "uid": "u1",
                               "apiVersion": "v1", "resourceVersion": "7", "fieldPath": "spec.containers{c}"},
            "reason": "Pulled", "type": "Normal", "reportingComponent": "kubelet",
            "source": {"component": ""}
        });
        for s in [
            "involvedObject.kind=Pod",
            "involvedObject.namespace=default",
            "involvedObject.name=p",
            "involvedObject.uid=u1",
            "involvedObject.apiVersion=v1",
            "involvedObject.resourceVersion=7",
            "involvedObject.fieldPath=spec.containers{c}",
            "reason=Pulled",
            "reportingComponent=kubelet",
            "source=kubelet",
            "type=Normal",
            "involvedObject.kind=Pod,involvedObject.name=p,involvedObject.namespace=default",
        ] {
            assert!(fsel(s, Kind::Event).matches(&ev), "{s}");
        }
        let ev2 = json!({"source": {"component": "scheduler"}, "reportingComponent": "x"});
        assert!(fsel("source=scheduler", Kind::Event).matches(&ev2));
    }

    #[test]
    fn other_kind_fields() {
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque"});
        assert!(fsel("type=Opaque", Kind::Secret).matches(&secret));
        assert!(!fsel("type=kubernetes.io/tls", Kind::Secret).matches(&secret));
        let ns = json!({"metadata": {"name": "n"}, "status": {"phase": "Active"}});
        assert!(fsel("status.phase=Active", Kind::Namespace).matches(&ns));
        let node = json!({"metadata": {"name": "n"}, "spec": {}});
        assert!(fsel("spec.unschedulable=false", Kind::Node).matches(&node));
        let cordoned = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}});
        assert!(fsel("spec.unschedulable=true", Kind::Node).matches(&cordoned));
        let svc = json!({"spec": {"clusterIP": "10.96.0.1", "type": "ClusterIP"}});
        assert!(
            fsel(
                "spec.clusterIP=10.96.0.1,spec.type=ClusterIP",
                Kind::Service
            )
            .matches(&svc)
        );
        let rs = json!({"status": {"replicas": 3}});
        assert!(fsel("status.replicas=3", Kind::ReplicaSet).matches(&rs));
        assert!(fsel("status.replicas=0", Kind::ReplicaSet).matches(&json!({})));
        assert!(FieldSelector::parse("status.replicas=1", Kind::StatefulSet).is_err());
        for kind in Kind::all() {
            assert!(supported_fields(kind).contains(&"metadata.name"), "{kind}");
        }
    }
}
