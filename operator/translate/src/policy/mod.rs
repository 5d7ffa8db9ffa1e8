//! IngressPolicy resolution: targets, precedence per block, reference resolution, status.

use std::collections::BTreeMap;

use portico_crds::IngressPolicyStatus;

use crate::{Index, Options, Output};

pub(crate) fn resolve(
    _index: &Index,
    _options: &Options,
    _out: &mut Output,
) -> BTreeMap<String, IngressPolicyStatus> {
    BTreeMap::new()
}
