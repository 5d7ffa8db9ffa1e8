//! Ingress translation: class selection, hosts, paths, backends, TLS, default backend.

use crate::{Index, Options, Output};

pub(crate) fn translate_ingresses(_index: &Index, _options: &Options) -> Output {
    Output::default()
}
