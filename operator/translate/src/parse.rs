//! Multi-document YAML (and JSON) text into [`Object`]s. Shared by every caller.

use crate::Object;

/// What [`parse_manifests`] found in one text.
#[derive(Debug, Default)]
pub struct Parsed {
    pub objects: Vec<Object>,
    pub problems: Vec<ParseProblem>,
}

/// A document that could not be taken, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseProblem {
    /// 1-based index of the document in the text.
    pub document: usize,
    pub message: String,
}

/// Parses every document in `text`. Objects without a namespace land in `default_namespace`.
pub fn parse_manifests(_text: &str, _default_namespace: &str) -> Parsed {
    Parsed::default()
}
