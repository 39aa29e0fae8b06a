//! The match-action model: flow keys, matches, actions, and the ovs-ofctl text syntax.
//! Nothing here touches DPDK, so all of it is tested on plain bytes.

pub mod action;
pub mod classifier;
pub mod compiled;
pub mod direct;
pub mod edit;
pub mod emc;
pub mod key;
pub mod matching;
pub mod parse;
pub mod store;

pub use action::{Action, MAX_TABLES};
pub use key::{FlowKey, KEY_WORDS};
pub use matching::{Field, Match};
pub use parse::{
    flow_lines, parse_filter, parse_flow, parse_flow_sharing, parse_packet, FlowFilter, FlowSpec, SharedActions,
};
