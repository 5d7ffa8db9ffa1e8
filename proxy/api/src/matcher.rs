//! placeholder
pub struct Router;
pub struct RouteMatch;
pub struct HostMap;
