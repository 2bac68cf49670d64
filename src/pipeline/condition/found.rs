//! What a condition's path finds in an event ([`Found`]: an attribute's text, a JSON value, or a
//! node of the decoded `data`) and how it compares with an operand: numbers exactly when both
//! are integers, else as `f64`; a kind that differs from the operand's compares as nothing.

use super::Scalar;
use crate::event::DataRef;
use serde_json::{Number, Value};
use std::cmp::Ordering;
use std::fmt;

/// What a path finds in an event, borrowed from it.
#[derive(Clone, Copy)]
pub(super) enum Found<'a> {
    Str(&'a str),
    Json(&'a Value),
    /// In the event's `data`, as decoded.
    Data(DataRef<'a>),
}

impl<'a> Found<'a> {
    pub(super) fn as_str(self) -> Option<&'a str> {
        match self {
            Self::Str(s) => Some(s),
            Self::Json(Value::String(s)) => Some(s),
            Self::Json(_) => None,
            Self::Data(d) => d.as_str(),
        }
    }

    fn as_number(self) -> Option<&'a Number> {
        match self {
            Self::Json(Value::Number(n)) => Some(n),
            Self::Data(d) => d.as_number(),
            _ => None,
        }
    }

    fn as_bool(self) -> Option<bool> {
        match self {
            Self::Json(Value::Bool(b)) => Some(*b),
            Self::Data(d) => d.as_bool(),
            _ => None,
        }
    }
}

impl fmt::Debug for Found<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => write!(f, "{}", Value::from(*s)),
            Self::Json(v) => write!(f, "{v}"),
            Self::Data(d) => write!(f, "{d}"),
        }
    }
}

/// Compares numbers: exactly when both are integers, else as `f64`.
fn cmp_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
        (Some(x), Some(y), _, _) => Some(x.cmp(&y)),
        (_, _, Some(x), Some(y)) => Some(x.cmp(&y)),
        // One fits i64 only (negative), the other u64 only (above i64::MAX).
        (Some(_), None, _, Some(_)) => Some(Ordering::Less),
        (None, Some(_), Some(_), _) => Some(Ordering::Greater),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// How what was found compares with an operand; `None` when their kinds differ.
pub(super) fn compare(found: Found<'_>, operand: &Scalar) -> Option<Ordering> {
    match (found, operand) {
        (f, Scalar::Num(m)) => cmp_numbers(f.as_number()?, m),
        (f, Scalar::Bool(c)) => Some(f.as_bool()?.cmp(c)),
        (f, Scalar::Str(s)) => f.as_str().map(|x| x.cmp(s.as_str())),
    }
}

pub(super) fn equals(found: Found<'_>, operand: &Scalar) -> bool {
    compare(found, operand) == Some(Ordering::Equal)
}
