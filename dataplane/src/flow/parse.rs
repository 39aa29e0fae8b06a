//! The ovs-ofctl flow syntax: `table=0,priority=100,in_port=1,ip,nw_dst=10.0.0.0/24,actions=output:2`.
//!
//! Items are separated by commas or spaces; `actions=` takes the rest of the text. Errors say
//! which word is wrong and where it starts, so the CLI can point at it.

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rustc_hash::FxBuildHasher;

use super::action::{Action, MAX_TABLES};
use super::key::{ethertype, ipproto, slot, FlowKey, VLAN_PCP_MASK, VLAN_PRESENT, VLAN_VID_MASK};
use super::matching::{Field, Kind, Match};
use crate::wire::MacAddr;

/// OpenFlow's default flow priority.
pub const DEFAULT_PRIORITY: u16 = 32768;

/// A flow as written: where it goes, what it matches, what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSpec {
    pub table: u8,
    pub priority: u16,
    pub cookie: u64,
    /// Seconds without a packet before the flow is removed (0: never).
    pub idle_timeout: u16,
    /// Seconds after creation before the flow is removed (0: never).
    pub hard_timeout: u16,
    pub matching: Match,
    /// Shared by flows with the same actions when parsed together ([`SharedActions`]).
    pub actions: Arc<[Action]>,
}

impl Default for FlowSpec {
    fn default() -> Self {
        Parsed::new().spec()
    }
}

impl fmt::Display for FlowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table={},priority={}", self.table, self.priority)?;
        if self.cookie != 0 {
            write!(f, ",cookie={:#x}", self.cookie)?;
        }
        if self.idle_timeout != 0 {
            write!(f, ",idle_timeout={}", self.idle_timeout)?;
        }
        if self.hard_timeout != 0 {
            write!(f, ",hard_timeout={}", self.hard_timeout)?;
        }
        if self.matching != Match::ANY {
            write!(f, ",{}", self.matching)?;
        }
        write!(f, ",actions={}", super::action::format_actions(&self.actions))
    }
}

/// Selects flows for dump, modify and delete.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowFilter {
    /// All tables when absent.
    pub table: Option<u8>,
    pub matching: Match,
    /// For strict operations: the exact priority.
    pub priority: Option<u16>,
    /// `cookie=VALUE/MASK`: flows whose cookie & MASK == VALUE.
    pub cookie: Option<(u64, u64)>,
    /// Only flows with an output to this port.
    pub out_port: Option<u32>,
}

/// A syntax error: the message, and the byte range of the offending word in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    pub start: usize,
    pub len: usize,
}

impl ParseError {
    fn at(word: &Word<'_>, message: String) -> ParseError {
        ParseError { message, start: word.start, len: word.text.len().max(1) }
    }

    /// The input with a caret line under the offending word.
    pub fn render(&self, input: &str) -> String {
        format!("{}\n  {input}\n  {}{}", self.message, " ".repeat(self.start), "^".repeat(self.len))
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at column {})", self.message, self.start + 1)
    }
}

impl std::error::Error for ParseError {}

#[derive(Debug, Clone, Copy)]
struct Word<'a> {
    text: &'a str,
    start: usize,
}

impl<'a> Word<'a> {
    fn sub(&self, from: usize, to: usize) -> Word<'a> {
        Word { text: &self.text[from..to], start: self.start + from }
    }
}

/// Where `byte` (ASCII) first is in `text`: for the few bytes of a word, a plain scan costs
/// less than `str::find`'s searcher.
fn byte_at(text: &str, byte: u8) -> Option<usize> {
    text.bytes().position(|b| b == byte)
}

/// Splits on commas and whitespace; `actions=...` stays one word (the rest of the input).
/// An iterator: parsing 10,000 rules allocates no list of words for each.
fn words(input: &str) -> Words<'_> {
    Words { input, i: 0 }
}

struct Words<'a> {
    input: &'a str,
    i: usize,
}

impl<'a> Iterator for Words<'a> {
    type Item = Word<'a>;

    fn next(&mut self) -> Option<Word<'a>> {
        let (input, b) = (self.input, self.input.as_bytes());
        while self.i < b.len() && (b[self.i] == b',' || b[self.i].is_ascii_whitespace()) {
            self.i += 1;
        }
        if self.i >= b.len() {
            return None;
        }
        let start = self.i;
        if b[start] == b'a' && (input[start..].starts_with("actions=") || input[start..].starts_with("actions:")) {
            self.i = b.len();
            return Some(Word { text: input[start..].trim_end(), start });
        }
        while self.i < b.len() && b[self.i] != b',' && !b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
        Some(Word { text: &input[start..self.i], start })
    }
}

fn parse_u64(w: &Word<'_>, what: &str) -> Result<u64, ParseError> {
    let t = w.text;
    let r = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else {
        t.parse::<u64>()
    };
    r.map_err(|_| ParseError::at(w, format!("{what}: '{t}' is not a number")))
}

fn parse_max(w: &Word<'_>, what: &str, max: u64) -> Result<u64, ParseError> {
    let v = parse_u64(w, what)?;
    if v > max {
        return Err(ParseError::at(w, format!("{what}: {v} is larger than {max}")));
    }
    Ok(v)
}

fn parse_mac(w: &Word<'_>, what: &str) -> Result<MacAddr, ParseError> {
    w.text.parse::<MacAddr>().map_err(|e| ParseError::at(w, format!("{what}: {e}")))
}

fn parse_ipv4(w: &Word<'_>, what: &str) -> Result<Ipv4Addr, ParseError> {
    ipv4_dotted(w.text).ok_or_else(|| ParseError::at(w, format!("{what}: '{}' is not an IPv4 address", w.text)))
}

/// `Ipv4Addr::from_str` without its general parser, which took a tenth of the parse of
/// 10,000 rules matching addresses: four decimal octets of 1 to 3 digits, no leading zero.
fn ipv4_dotted(text: &str) -> Option<Ipv4Addr> {
    let (mut addr, mut octets) = (0u32, 0);
    let (mut value, mut digits, mut leading_zero) = (0u32, 0, false);
    for &b in text.as_bytes() {
        match b {
            b'0'..=b'9' if digits < 3 && !leading_zero => {
                leading_zero = digits == 0 && b == b'0';
                value = value * 10 + (b - b'0') as u32;
                digits += 1;
            }
            b'.' if digits > 0 && value <= 255 && octets < 3 => {
                addr = addr << 8 | value;
                (value, digits, leading_zero, octets) = (0, 0, false, octets + 1);
            }
            _ => return None,
        }
    }
    (digits > 0 && value <= 255 && octets == 3).then(|| Ipv4Addr::from(addr << 8 | value))
}

/// `value` or `value/mask` of a field, into the match.
fn set_field(m: &mut Match, field: Field, w: &Word<'_>, exact_only: bool) -> Result<(), ParseError> {
    let name = field.name();
    let (val, mask) = match byte_at(w.text, b'/') {
        Some(i) => (w.sub(0, i), Some(w.sub(i + 1, w.text.len()))),
        None => (*w, None),
    };
    if let Some(mw) = &mask {
        if exact_only {
            return Err(ParseError::at(mw, format!("{name}: a mask is not allowed here")));
        }
        if !field.maskable() {
            return Err(ParseError::at(mw, format!("{name} cannot be masked")));
        }
    }
    let conflict = |_| ParseError::at(w, format!("{name} contradicts an earlier field of this flow"));
    match field.kind() {
        Kind::Ipv6 => {
            let addr: Ipv6Addr = val
                .text
                .parse()
                .map_err(|_| ParseError::at(&val, format!("{name}: '{}' is not an IPv6 address", val.text)))?;
            let prefix = match &mask {
                None => 128,
                Some(mw) => match mw.text.parse::<Ipv6Addr>() {
                    Ok(m) => {
                        let m = u128::from(m);
                        if m.leading_ones() + m.trailing_zeros() != 128 {
                            return Err(ParseError::at(mw, format!("{name}: IPv6 masks must be prefixes")));
                        }
                        m.leading_ones() as u64
                    }
                    Err(_) => parse_max(mw, name, 128)?,
                },
            };
            m.set_ipv6(field == Field::Ipv6Src, addr, prefix as u8).map_err(conflict)?;
            return Ok(());
        }
        Kind::Frag => {
            let (v, mk) = match val.text {
                "no" => (0, 1),
                "yes" => (1, 1),
                "first" => (1, 3),
                "later" => (3, 3),
                "not_later" => (0, 2),
                _ => {
                    return Err(ParseError::at(&val, format!("{name}: one of no, yes, first, later, not_later")));
                }
            };
            let (s, _) = field.slot_and_max();
            return m.set(s, v, mk).map_err(conflict);
        }
        _ => {}
    }
    let (s, max) = field.slot_and_max();
    let value = match field.kind() {
        Kind::Mac => parse_mac(&val, name)?.to_u64(),
        Kind::Ipv4 => u32::from(parse_ipv4(&val, name)?) as u64,
        _ => parse_max(&val, name, max)?,
    };
    let mask_value = match &mask {
        None => max,
        Some(mw) => match field.kind() {
            Kind::Mac => parse_mac(mw, name)?.to_u64(),
            Kind::Ipv4 => match ipv4_dotted(mw.text) {
                Some(a) => u32::from(a) as u64,
                None => {
                    let bits = parse_max(mw, name, 32)?;
                    if bits == 0 {
                        0
                    } else {
                        (u32::MAX << (32 - bits)) as u64
                    }
                }
            },
            _ => parse_max(mw, name, max)?,
        },
    };
    // Sub-fields of a shared byte: write them into their bits (with the VLAN present bit).
    let (value, mask_value) = match field {
        Field::VlanVid => {
            if value > VLAN_VID_MASK as u64 {
                return Err(ParseError::at(&val, format!("{name}: {value} is larger than 4095")));
            }
            (VLAN_PRESENT as u64 | value, (VLAN_PRESENT | VLAN_VID_MASK) as u64)
        }
        Field::VlanPcp => {
            if value > 7 {
                return Err(ParseError::at(&val, format!("{name}: {value} is larger than 7")));
            }
            (VLAN_PRESENT as u64 | value << 13, (VLAN_PRESENT | VLAN_PCP_MASK) as u64)
        }
        Field::IpDscp => {
            if value > 63 {
                return Err(ParseError::at(&val, format!("{name}: {value} is larger than 63")));
            }
            (value << 2, 0xfc)
        }
        Field::IpEcn => {
            if value > 3 {
                return Err(ParseError::at(&val, format!("{name}: {value} is larger than 3")));
            }
            (value, 0x03)
        }
        Field::IpTos => (value & 0xfc, 0xfc),
        _ => (value, mask_value),
    };
    m.set(s, value, mask_value).map_err(conflict)
}

/// Adds `field=text` (text as in the flow syntax: `10.0.0.0/24`, `0x50/0xfff0`, ...) to a
/// match: how typed API requests get the same meaning as text flows.
pub fn set_field_text(m: &mut Match, field: Field, text: &str) -> Result<(), String> {
    set_field(m, field, &Word { text, start: 0 }, false).map_err(|e| e.message)
}

/// A protocol shorthand: the dl_type (and nw_proto) it stands for.
fn shorthand(word: &str) -> Option<(u16, Option<u8>)> {
    Some(match word {
        "ip" => (ethertype::IPV4, None),
        "ipv6" => (ethertype::IPV6, None),
        "arp" => (ethertype::ARP, None),
        "tcp" => (ethertype::IPV4, Some(ipproto::TCP)),
        "udp" => (ethertype::IPV4, Some(ipproto::UDP)),
        "sctp" => (ethertype::IPV4, Some(ipproto::SCTP)),
        "icmp" => (ethertype::IPV4, Some(ipproto::ICMP)),
        "tcp6" => (ethertype::IPV6, Some(ipproto::TCP)),
        "udp6" => (ethertype::IPV6, Some(ipproto::UDP)),
        "sctp6" => (ethertype::IPV6, Some(ipproto::SCTP)),
        "icmp6" => (ethertype::IPV6, Some(ipproto::ICMPV6)),
        _ => return None,
    })
}

/// What a word may be besides match fields.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Flow,
    Filter,
    Packet,
}

/// What a text said, before it becomes a flow, a filter or a packet. The flow's actions
/// stay apart (`None` until `actions=`), so a rule's parse takes no default list first.
struct Parsed {
    table: u8,
    priority: u16,
    cookie: u64,
    idle_timeout: u16,
    hard_timeout: u16,
    matching: Match,
    actions: Option<Arc<[Action]>>,
    /// The filter's own fields; its match is `matching` (not a second copy of it: every
    /// byte of this struct is written for each of 10,000 rules).
    filter: Selects,
}

/// See [`FlowFilter`].
#[derive(Default)]
struct Selects {
    table: Option<u8>,
    priority: Option<u16>,
    cookie: Option<(u64, u64)>,
    out_port: Option<u32>,
}

impl Parsed {
    fn new() -> Parsed {
        Parsed {
            table: 0,
            priority: DEFAULT_PRIORITY,
            cookie: 0,
            idle_timeout: 0,
            hard_timeout: 0,
            matching: Match::ANY,
            actions: None,
            filter: Selects::default(),
        }
    }

    /// The flow; no actions are an empty list (an empty `Arc<[T]>` is a static: no allocation).
    fn spec(self) -> FlowSpec {
        FlowSpec {
            table: self.table,
            priority: self.priority,
            cookie: self.cookie,
            idle_timeout: self.idle_timeout,
            hard_timeout: self.hard_timeout,
            matching: self.matching,
            actions: self.actions.unwrap_or_default(),
        }
    }

    fn filter(self) -> FlowFilter {
        let Selects { table, priority, cookie, out_port } = self.filter;
        FlowFilter { table, matching: self.matching, priority, cookie, out_port }
    }
}

fn parse_items(input: &str, mode: Mode, shared: &mut SharedActions) -> Result<Parsed, ParseError> {
    let mut p = Parsed::new();
    for w in words(input) {
        if let Some(rest) = w.text.strip_prefix("actions=").or_else(|| w.text.strip_prefix("actions:")) {
            if mode != Mode::Flow {
                return Err(ParseError::at(&w, "actions are not allowed here".into()));
            }
            p.actions = Some(shared.parse(rest, w.start + 8)?);
            continue;
        }
        let (key, value) = match byte_at(w.text, b'=') {
            Some(i) => (w.sub(0, i), Some(w.sub(i + 1, w.text.len()))),
            None => (w, None),
        };
        let need_value = |what: &str| -> Result<Word<'_>, ParseError> {
            value.ok_or_else(|| ParseError::at(&key, format!("{what} needs a value ({what}=...)")))
        };
        match key.text {
            "table" => {
                let t = parse_max(&need_value("table")?, "table", MAX_TABLES as u64 - 1)? as u8;
                p.table = t;
                p.filter.table = Some(t);
            }
            "priority" if mode != Mode::Packet => {
                let v = parse_max(&need_value("priority")?, "priority", 65535)? as u16;
                p.priority = v;
                p.filter.priority = Some(v);
            }
            "cookie" if mode != Mode::Packet => {
                let vw = need_value("cookie")?;
                match vw.text.find('/') {
                    Some(i) if mode == Mode::Filter => {
                        let v = parse_u64(&vw.sub(0, i), "cookie")?;
                        let mask = parse_u64(&vw.sub(i + 1, vw.text.len()), "cookie mask")?;
                        p.filter.cookie = Some((v & mask, mask));
                    }
                    Some(_) => {
                        return Err(ParseError::at(&vw, "cookie: a mask is only allowed when selecting flows".into()))
                    }
                    None => {
                        let v = parse_u64(&vw, "cookie")?;
                        p.cookie = v;
                        p.filter.cookie = Some((v, u64::MAX));
                    }
                }
            }
            "idle_timeout" | "hard_timeout" if mode == Mode::Flow => {
                let v = parse_max(&need_value(key.text)?, key.text, 65535)? as u16;
                if key.text == "idle_timeout" {
                    p.idle_timeout = v;
                } else {
                    p.hard_timeout = v;
                }
            }
            "out_port" if mode == Mode::Filter => {
                p.filter.out_port = Some(parse_max(&need_value("out_port")?, "out_port", u32::MAX as u64)? as u32);
            }
            word => {
                if let Some((eth, proto)) = shorthand(word) {
                    if value.is_some() {
                        return Err(ParseError::at(&w, format!("'{word}' takes no value")));
                    }
                    let conflict =
                        |_| ParseError::at(&w, format!("'{word}' contradicts an earlier field of this flow"));
                    p.matching.set(slot::ETH_TYPE, eth as u64, 0xffff).map_err(conflict)?;
                    if let Some(proto) = proto {
                        p.matching.set(slot::IP_PROTO, proto as u64, 0xff).map_err(conflict)?;
                    }
                    continue;
                }
                let Some(field) = Field::from_name(word) else {
                    let hint = if mode == Mode::Flow && ["output", "drop", "normal", "NORMAL"].contains(&word) {
                        " (actions go after actions=)"
                    } else {
                        ""
                    };
                    return Err(ParseError::at(&key, format!("unknown field '{word}'{hint}")));
                };
                let vw = need_value(word)?;
                set_field(&mut p.matching, field, &vw, mode == Mode::Packet)?;
            }
        }
    }
    Ok(p)
}

/// The flows of a flow file (`ovs-ofctl add-flows` syntax): each non-blank line that does
/// not start with `#`, trimmed, with its line number (from 1). The flows are counted first,
/// so the iterator knows its length: a transaction reserves room for all of them at once.
pub fn flow_lines(text: &str) -> FlowLines<'_> {
    let mut lines = FlowLines { text, at: 0, line: 0, left: 0 };
    lines.left = lines.clone().count();
    lines
}

fn is_flow_line(trimmed: &str) -> bool {
    !trimmed.is_empty() && !trimmed.starts_with('#')
}

/// `str::trim` for lines that are ASCII at both ends, which it is three times slower at (a
/// 10,000-rule file trims each line twice: counted, then parsed).
fn trim_line(line: &str) -> &str {
    let b = line.as_bytes();
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |i| i + 1);
    // Both ends are ASCII bytes (or the ends of the line), so these are char boundaries.
    let trimmed = &line[start..end];
    match (trimmed.as_bytes().first(), trimmed.as_bytes().last()) {
        (Some(&first), Some(&last)) if !first.is_ascii() || !last.is_ascii() => trimmed.trim(),
        _ => trimmed,
    }
}

/// See [`flow_lines`]. Lines end at `\n` (a `\r` before it is trimmed away), found with
/// `memchr`'s vector search.
#[derive(Clone)]
pub struct FlowLines<'a> {
    text: &'a str,
    /// Where the next line starts.
    at: usize,
    /// The number of the line last returned.
    line: usize,
    left: usize,
}

impl<'a> Iterator for FlowLines<'a> {
    type Item = (usize, &'a str);

    fn next(&mut self) -> Option<(usize, &'a str)> {
        while self.at < self.text.len() {
            let rest = &self.text.as_bytes()[self.at..];
            let end = self.at + memchr::memchr(b'\n', rest).unwrap_or(rest.len());
            let line = trim_line(&self.text[self.at..end]);
            self.at = end + 1;
            self.line += 1;
            if is_flow_line(line) {
                // Saturating: the copy `flow_lines` counts with starts at 0.
                self.left = self.left.saturating_sub(1);
                return Some((self.line, line));
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for FlowLines<'_> {}

/// Parses a flow (`add-flow` syntax). Actions are required (`actions=drop` for none).
pub fn parse_flow(input: &str) -> Result<FlowSpec, ParseError> {
    parse_flow_sharing(input, &mut SharedActions::default())
}

/// [`parse_flow`] for one of many flows: its actions are shared with the earlier flows
/// `shared` saw that have the same ones.
pub fn parse_flow_sharing(input: &str, shared: &mut SharedActions) -> Result<FlowSpec, ParseError> {
    let p = parse_items(input, Mode::Flow, shared)?;
    if p.actions.is_none() {
        return Err(ParseError {
            message: "missing actions= (use actions=drop to drop)".into(),
            start: input.len(),
            len: 1,
        });
    }
    if let Some((field, pre)) = p.matching.unmet_prerequisite() {
        let pos = input
            .find(&format!("{}=", field.name()))
            .or_else(|| field.names().iter().find_map(|n| input.find(n)))
            .unwrap_or(0);
        return Err(ParseError {
            message: format!("{} needs {} in the match (OpenFlow prerequisite)", field.name(), pre.hint()),
            start: pos,
            len: field.name().len(),
        });
    }
    Ok(p.spec())
}

/// Parses a flow selection (`dump-flows`, `del-flows`, `mod-flows` syntax without actions).
pub fn parse_filter(input: &str) -> Result<FlowFilter, ParseError> {
    Ok(parse_items(input, Mode::Filter, &mut SharedActions::default())?.filter())
}

/// Parses a packet description for `trace` (exact values, no masks): the flow key the
/// packet would have.
pub fn parse_packet(input: &str) -> Result<FlowKey, ParseError> {
    let p = parse_items(input, Mode::Packet, &mut SharedActions::default())?;
    Ok(p.matching.value)
}

/// Parses `modify` syntax: a filter plus the new actions.
pub fn parse_flow_mod(input: &str) -> Result<(FlowFilter, Arc<[Action]>), ParseError> {
    let mut p = parse_items(input, Mode::Flow, &mut SharedActions::default())?;
    let Some(actions) = p.actions.take() else {
        return Err(ParseError { message: "missing actions=".into(), start: input.len(), len: 1 });
    };
    Ok((p.filter(), actions))
}

fn set_field_action(value: Word<'_>, field: Word<'_>) -> Result<Action, ParseError> {
    let f = field.text;
    Ok(match f {
        "eth_src" | "dl_src" => Action::SetEthSrc(parse_mac(&value, f)?),
        "eth_dst" | "dl_dst" => Action::SetEthDst(parse_mac(&value, f)?),
        "ip_src" | "nw_src" => Action::SetIpv4Src(parse_ipv4(&value, f)?),
        "ip_dst" | "nw_dst" => Action::SetIpv4Dst(parse_ipv4(&value, f)?),
        "ip_dscp" => Action::SetIpDscp(parse_max(&value, f, 63)? as u8),
        "vlan_vid" | "dl_vlan" => Action::SetVlanVid(parse_max(&value, f, 4095)? as u16),
        "vlan_pcp" | "dl_vlan_pcp" => Action::SetVlanPcp(parse_max(&value, f, 7)? as u8),
        "tcp_src" | "udp_src" | "sctp_src" | "tp_src" => Action::SetTpSrc(parse_max(&value, f, 65535)? as u16),
        "tcp_dst" | "udp_dst" | "sctp_dst" | "tp_dst" => Action::SetTpDst(parse_max(&value, f, 65535)? as u16),
        "tun_id" | "tunnel_id" => Action::SetTunnelId(parse_max(&value, f, u64::MAX)?),
        "tun_dst" => Action::SetTunDst(parse_ipv4(&value, f)?),
        _ => return Err(ParseError::at(&field, format!("set_field cannot set '{f}'"))),
    })
}

/// Parses an action list (the text after `actions=`); `offset` is its position in the input.
pub fn parse_actions(text: &str, offset: usize) -> Result<Vec<Action>, ParseError> {
    let mut out = Vec::new();
    parse_actions_into(text, offset, &mut out)?;
    Ok(out)
}

/// Action lists already parsed, so that flows with the same actions share one list: 10,000
/// rules that all say `actions=output:2` hold one allocation instead of 10,000, and so do
/// their compiled rules. Lives for one request; it keeps at most [`SharedActions::MAX`]
/// distinct lists (a request whose every flow differs must not build a second index).
#[derive(Default)]
pub struct SharedActions {
    scratch: Vec<Action>,
    seen: HashSet<Arc<[Action]>, FxBuildHasher>,
    /// The text of the last list and the list: the same text again (the usual case in a
    /// policy file) is not parsed again.
    last: Option<(String, Arc<[Action]>)>,
}

impl SharedActions {
    pub const MAX: usize = 4096;

    /// Parses `actions=` text (as [`parse_actions`]) into a shared list.
    pub fn parse(&mut self, text: &str, offset: usize) -> Result<Arc<[Action]>, ParseError> {
        if let Some((last_text, list)) = &self.last {
            if last_text == text {
                return Ok(list.clone());
            }
        }
        self.scratch.clear();
        parse_actions_into(text, offset, &mut self.scratch)?;
        let list = match self.seen.get(self.scratch.as_slice()) {
            Some(known) => known.clone(),
            None => {
                let list: Arc<[Action]> = Arc::from(self.scratch.as_slice());
                if self.seen.len() < Self::MAX {
                    self.seen.insert(list.clone());
                }
                list
            }
        };
        let (last_text, last_list) = self.last.get_or_insert_with(|| (String::new(), list.clone()));
        last_text.clear();
        last_text.push_str(text);
        *last_list = list.clone();
        Ok(list)
    }
}

/// Appends the actions of `text` to `out` (which the caller clears).
fn parse_actions_into(text: &str, offset: usize, out: &mut Vec<Action>) -> Result<(), ParseError> {
    let items = || {
        let mut start = 0;
        text.split(',')
            .map(move |t| {
                let w = Word { text: t.trim(), start: offset + start + (t.len() - t.trim_start().len()) };
                start += t.len() + 1;
                w
            })
            .filter(|w| !w.text.is_empty())
    };
    let n = items().count();
    for w in items() {
        let (name, arg) = match w.text.split_once(':') {
            Some((n, _)) => (n, Some(w.sub(n.len() + 1, w.text.len()))),
            None => (w.text, None),
        };
        let arg_or =
            |what: &str| arg.ok_or_else(|| ParseError::at(&w, format!("{what} needs an argument ({what}:...)")));
        let action = match name {
            "drop" => {
                if n > 1 {
                    return Err(ParseError::at(&w, "drop must be the only action".into()));
                }
                continue;
            }
            "output" => Action::Output(parse_max(&arg_or("output")?, "output", u32::MAX as u64)? as u32),
            "normal" | "NORMAL" => Action::Normal,
            "flood" | "FLOOD" | "all" | "ALL" => Action::Flood,
            "in_port" | "IN_PORT" => Action::InPort,
            "push_vlan" => Action::PushVlan(parse_max(&arg_or("push_vlan")?, "push_vlan", 0xffff)? as u16),
            "pop_vlan" | "strip_vlan" => Action::PopVlan,
            "mod_vlan_vid" => Action::SetVlanVid(parse_max(&arg_or(name)?, name, 4095)? as u16),
            "mod_vlan_pcp" => Action::SetVlanPcp(parse_max(&arg_or(name)?, name, 7)? as u8),
            "mod_dl_src" => Action::SetEthSrc(parse_mac(&arg_or(name)?, name)?),
            "mod_dl_dst" => Action::SetEthDst(parse_mac(&arg_or(name)?, name)?),
            "mod_nw_src" => Action::SetIpv4Src(parse_ipv4(&arg_or(name)?, name)?),
            "mod_nw_dst" => Action::SetIpv4Dst(parse_ipv4(&arg_or(name)?, name)?),
            "mod_nw_tos" => {
                let tos = parse_max(&arg_or(name)?, name, 255)?;
                Action::SetIpDscp((tos >> 2) as u8)
            }
            "dec_ttl" => Action::DecTtl,
            "mod_tp_src" => Action::SetTpSrc(parse_max(&arg_or(name)?, name, 65535)? as u16),
            "mod_tp_dst" => Action::SetTpDst(parse_max(&arg_or(name)?, name, 65535)? as u16),
            "goto_table" => Action::GotoTable(parse_max(&arg_or(name)?, name, MAX_TABLES as u64 - 1)? as u8),
            "counter" => Action::Counter(arg_or(name)?.text.to_string()),
            "set_tunnel" | "set_tunnel64" => Action::SetTunnelId(parse_max(&arg_or(name)?, name, u64::MAX)?),
            "set_field" | "load" => {
                let a = arg_or("set_field")?;
                let Some(i) = a.text.find("->") else {
                    return Err(ParseError::at(&a, "set_field needs VALUE->FIELD".into()));
                };
                set_field_action(a.sub(0, i), a.sub(i + 2, a.text.len()))?
            }
            bare if bare.chars().all(|c| c.is_ascii_digit()) && arg.is_none() => {
                Action::Output(parse_max(&w, "output", u32::MAX as u64)? as u32)
            }
            other => return Err(ParseError::at(&w.sub(0, other.len()), format!("unknown action '{other}'"))),
        };
        out.push(action);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_lines_skip_blanks_and_comments_and_keep_line_numbers() {
        let text = "# policy\n  in_port=1,actions=drop  \n\n\t\n#x\nin_port=2,actions=drop";
        let lines = flow_lines(text);
        assert_eq!(lines.len(), 2, "counted before they are read");
        assert_eq!(lines.collect::<Vec<_>>(), [(2, "in_port=1,actions=drop"), (6, "in_port=2,actions=drop")]);
    }

    #[test]
    fn flow_lines_read_crlf_and_trim_unicode_spaces_as_str_lines_and_trim_do() {
        let text = "in_port=1,actions=drop\r\n\u{a0}in_port=2,actions=drop\u{2003}\r\n \u{a0} \n#c\r\n\r\nin_port=é\n";
        let expected: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(expected.len(), 3);
        assert_eq!(flow_lines(text).len(), 3);
        assert_eq!(flow_lines(text).collect::<Vec<_>>(), expected);
        assert_eq!(flow_lines("").count(), 0);
        assert_eq!(flow_lines("\n\n").count(), 0);
    }

    #[test]
    fn ipv4_dotted_reads_what_the_standard_parser_reads() {
        let mut cases: Vec<String> = [
            "10.1.2.3",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1..2.3",
            "1.2.3.",
            ".1.2.3",
            "1.2.3.4 ",
            "+1.2.3.4",
            "1.2.3.-4",
            "1000.1.1.1",
            "0x1.1.1.1",
            "",
            "1.2.3.٣",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every short string over the bytes that matter.
        let alphabet = ["0", "1", "9", "25", "255", "256", "00", ".", "a"];
        let mut frontier = vec![String::new()];
        for _ in 0..5 {
            frontier = frontier.iter().flat_map(|p| alphabet.iter().map(move |a| format!("{p}{a}"))).collect();
            cases.extend(frontier.iter().cloned());
        }
        for case in &cases {
            assert_eq!(ipv4_dotted(case), case.parse::<Ipv4Addr>().ok(), "{case:?}");
        }
    }

    #[test]
    fn flows_parsed_together_share_equal_action_lists() {
        let mut shared = SharedActions::default();
        let mut parse = |t: &str| parse_flow_sharing(t, &mut shared);
        let a = parse("priority=1,in_port=1,actions=output:2").unwrap();
        let b = parse("priority=2,in_port=2,actions=output:2").unwrap();
        let c = parse("priority=3,in_port=3,actions=dec_ttl,output:2").unwrap();
        // Written differently, the same actions: shared through the set, not the last text.
        let d = parse("priority=4,in_port=4,actions= 2").unwrap();
        assert!(Arc::ptr_eq(&a.actions, &b.actions));
        assert!(!Arc::ptr_eq(&a.actions, &c.actions));
        assert_eq!(*c.actions, [Action::DecTtl, Action::Output(2)]);
        assert!(Arc::ptr_eq(&a.actions, &d.actions));
        // A bad list after good ones is still an error, pointing at its own text.
        let text = "in_port=5,actions=output:2,bogus";
        let e = parse(text).unwrap_err();
        assert_eq!((e.message.as_str(), &text[e.start..e.start + e.len]), ("unknown action 'bogus'", "bogus"));
        // Flows parsed apart do not share.
        let f = parse_flow("priority=1,in_port=1,actions=output:2").unwrap();
        assert!(!Arc::ptr_eq(&a.actions, &f.actions));
        assert_eq!(a.actions, f.actions);
    }

    #[test]
    fn the_issue_example() {
        let f = parse_flow("table=0,priority=100,in_port=1,ip,nw_dst=10.0.0.0/24,actions=output:2").unwrap();
        assert_eq!((f.table, f.priority), (0, 100));
        assert_eq!(*f.actions, [Action::Output(2)]);
        assert_eq!(f.matching.exact(slot::IN_PORT), Some(1));
        assert_eq!(f.matching.exact(slot::ETH_TYPE), Some(0x0800));
        assert_eq!(slot::NW_DST.get(&f.matching.mask), 0xffff_ff00);
        assert_eq!(f.to_string(), "table=0,priority=100,ip,in_port=1,nw_dst=10.0.0.0/24,actions=output:2");
        // What it prints parses back to the same flow.
        assert_eq!(parse_flow(&f.to_string()).unwrap(), f);
    }

    #[test]
    fn defaults_spaces_and_many_actions() {
        let f = parse_flow(
            "tcp tp_dst=80 actions=mod_dl_dst:02:00:00:00:00:09,set_field:10.1.1.1->ip_dst,output:3, 4,goto_table:2",
        )
        .unwrap();
        assert_eq!((f.table, f.priority), (0, DEFAULT_PRIORITY));
        assert_eq!(
            *f.actions,
            [
                Action::SetEthDst("02:00:00:00:00:09".parse().unwrap()),
                Action::SetIpv4Dst(Ipv4Addr::new(10, 1, 1, 1)),
                Action::Output(3),
                Action::Output(4),
                Action::GotoTable(2),
            ]
        );
        assert_eq!(parse_flow("in_port=1,actions=drop").unwrap().actions.len(), 0);
    }

    #[test]
    fn round_trip_of_many_fields() {
        for text in [
            "table=3,priority=7,cookie=0x2a,idle_timeout=10,hard_timeout=60,udp6,ipv6_src=2001:db8::/48,tp_src=53,actions=NORMAL",
            "table=0,priority=1,arp,arp_op=1,arp_tpa=10.0.0.0/8,actions=FLOOD",
            "table=0,priority=9,dl_src=02:00:00:00:00:00/ff:ff:ff:00:00:00,dl_vlan=10,actions=pop_vlan,output:1",
            "table=0,priority=9,icmp,icmp_type=8,icmp_code=0,actions=IN_PORT",
            "table=0,priority=9,ip,ip_dscp=46,nw_ttl=1,nw_frag=later,actions=dec_ttl,counter:ttl-one",
            "table=0,priority=9,tun_id=0x64,tun_src=192.0.2.1,actions=output:1",
            "table=0,priority=9,vlan_tci=0x0000,actions=push_vlan:0x8100,mod_vlan_vid:5,output:2",
        ] {
            let f = parse_flow(text).unwrap_or_else(|e| panic!("{}", e.render(text)));
            assert_eq!(f.to_string(), text);
        }
    }

    #[test]
    fn errors_point_at_the_word() {
        let input = "priority=10,nw_dstt=10.0.0.1,actions=drop";
        let e = parse_flow(input).unwrap_err();
        assert_eq!(e.message, "unknown field 'nw_dstt'");
        assert_eq!(&input[e.start..e.start + e.len], "nw_dstt");
        assert!(e.render(input).ends_with("             ^^^^^^^"));

        let input = "ip,nw_dst=10.0.0.300,actions=drop";
        let e = parse_flow(input).unwrap_err();
        assert_eq!(&input[e.start..e.start + e.len], "10.0.0.300");

        let input = "in_port=1,actions=output:2,frobnicate";
        let e = parse_flow(input).unwrap_err();
        assert_eq!(e.message, "unknown action 'frobnicate'");
        assert_eq!(&input[e.start..e.start + e.len], "frobnicate");

        let e = parse_flow("in_port=1,output:2").unwrap_err();
        assert!(e.message.contains("unknown field 'output:2'") || e.message.contains("actions"), "{}", e.message);
        let e = parse_flow("in_port=1").unwrap_err();
        assert!(e.message.starts_with("missing actions="));
        let e = parse_flow("in_port=1,in_port=2,actions=drop").unwrap_err();
        assert!(e.message.contains("contradicts"), "{}", e.message);
    }

    #[test]
    fn prerequisites_are_checked() {
        let input = "tp_dst=80,actions=drop";
        let e = parse_flow(input).unwrap_err();
        assert!(e.message.contains("tp_dst needs tcp, udp or sctp"), "{}", e.message);
        assert_eq!(&input[e.start..e.start + e.len], "tp_dst");
        assert!(parse_flow("nw_src=10.0.0.1,actions=drop").unwrap_err().message.contains("needs ip"));
        assert!(parse_flow("tcp,tp_dst=80,actions=drop").is_ok());
    }

    #[test]
    fn filters_and_packets() {
        let f = parse_filter("table=2,cookie=0x10/0xf0,out_port=3,ip").unwrap();
        assert_eq!(f.table, Some(2));
        assert_eq!(f.cookie, Some((0x10, 0xf0)));
        assert_eq!(f.out_port, Some(3));
        assert!(parse_filter("actions=drop").is_err());
        let k = parse_packet("in_port=1,dl_dst=02:00:00:00:00:02,tcp,nw_dst=10.0.0.2,tp_dst=80").unwrap();
        assert_eq!(k.in_port(), 1);
        assert_eq!(slot::TP_DST.get(&k), 80);
        assert!(parse_packet("in_port=1,ip,nw_dst=10.0.0.0/8").is_err(), "no masks in packets");
    }
}
