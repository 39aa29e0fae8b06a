//! Between the typed API messages and the flow model. Errors name the field, as a path
//! relative to the message converted (`match.ipv4_dst`, `actions[2]`).

use std::net::Ipv4Addr;

use dataplane::flow::compiled::MissAction;
use dataplane::flow::parse::{set_field_text, FlowFilter, FlowSpec, DEFAULT_PRIORITY};
use dataplane::flow::store::FlowOp;
use dataplane::flow::{Action, Field, Match, MAX_TABLES};
use dataplane::wire::MacAddr;
use vswitch_proto::v1 as pb;

/// A field path and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), message: message.into() }
    }

    /// The same error under `prefix` (`ops[3].add`).
    pub fn under(self, prefix: &str) -> FieldError {
        FieldError { field: format!("{prefix}.{}", self.field), message: self.message }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn with_mask(value: String, mask: Option<String>) -> String {
    match mask {
        Some(m) => format!("{value}/{m}"),
        None => value,
    }
}

/// A typed match as a model match, with the same meaning as the text syntax.
pub fn match_to_model(m: &pb::Match) -> Result<Match, FieldError> {
    let mut out = Match::ANY;
    let mut set = |name: &str, field: Field, text: Option<String>| -> Result<(), FieldError> {
        match text {
            Some(t) => set_field_text(&mut out, field, &t).map_err(|e| FieldError::new(format!("match.{name}"), e)),
            None => Ok(()),
        }
    };
    let num = |v: Option<u32>| v.map(|v| v.to_string());
    let hex = |v: Option<u32>| v.map(|v| format!("{v:#x}"));
    set("in_port", Field::InPort, num(m.in_port))?;
    set("eth_src", Field::EthSrc, m.eth_src.clone().map(|v| with_mask(v, m.eth_src_mask.clone())))?;
    set("eth_dst", Field::EthDst, m.eth_dst.clone().map(|v| with_mask(v, m.eth_dst_mask.clone())))?;
    set("eth_type", Field::EthType, hex(m.eth_type))?;
    set("vlan_vid", Field::VlanVid, num(m.vlan_vid))?;
    set("vlan_pcp", Field::VlanPcp, num(m.vlan_pcp))?;
    set("vlan_tci", Field::VlanTci, hex(m.vlan_tci).map(|v| with_mask(v, hex(m.vlan_tci_mask))))?;
    set("ip_proto", Field::IpProto, num(m.ip_proto))?;
    set("ip_dscp", Field::IpDscp, num(m.ip_dscp))?;
    set("ip_ecn", Field::IpEcn, num(m.ip_ecn))?;
    set("ip_ttl", Field::IpTtl, num(m.ip_ttl))?;
    set("ip_frag", Field::IpFrag, m.ip_frag.clone())?;
    set("ipv4_src", Field::Ipv4Src, m.ipv4_src.clone())?;
    set("ipv4_dst", Field::Ipv4Dst, m.ipv4_dst.clone())?;
    set("ipv6_src", Field::Ipv6Src, m.ipv6_src.clone())?;
    set("ipv6_dst", Field::Ipv6Dst, m.ipv6_dst.clone())?;
    set("tp_src", Field::TpSrc, num(m.tp_src).map(|v| with_mask(v, hex(m.tp_src_mask))))?;
    set("tp_dst", Field::TpDst, num(m.tp_dst).map(|v| with_mask(v, hex(m.tp_dst_mask))))?;
    set("icmp_type", Field::IcmpType, num(m.icmp_type))?;
    set("icmp_code", Field::IcmpCode, num(m.icmp_code))?;
    set("arp_op", Field::ArpOp, num(m.arp_op))?;
    set("arp_spa", Field::ArpSpa, m.arp_spa.clone())?;
    set("arp_tpa", Field::ArpTpa, m.arp_tpa.clone())?;
    set(
        "tun_id",
        Field::TunId,
        m.tun_id.map(|v| with_mask(format!("{v:#x}"), m.tun_id_mask.map(|k| format!("{k:#x}")))),
    )?;
    set("tun_src", Field::TunSrc, m.tun_src.clone())?;
    set("tun_dst", Field::TunDst, m.tun_dst.clone())?;
    if m.tp_src_mask.is_some() && m.tp_src.is_none() {
        return Err(FieldError::new("match.tp_src_mask", "needs tp_src"));
    }
    if m.tp_dst_mask.is_some() && m.tp_dst.is_none() {
        return Err(FieldError::new("match.tp_dst_mask", "needs tp_dst"));
    }
    Ok(out)
}

fn parse_num(text: &str) -> u64 {
    text.strip_prefix("0x").map_or_else(|| text.parse().unwrap_or(0), |h| u64::from_str_radix(h, 16).unwrap_or(0))
}

fn split(text: &str) -> (String, Option<String>) {
    match text.split_once('/') {
        Some((v, m)) => (v.to_string(), Some(m.to_string())),
        None => (text.to_string(), None),
    }
}

/// A model match as a typed match.
pub fn match_from_model(m: &Match) -> pb::Match {
    let mut out = pb::Match::default();
    for (field, text) in m.fields() {
        let (v, mask) = split(&text);
        let n = || parse_num(&v) as u32;
        let nm = || mask.as_deref().map(|k| parse_num(k) as u32);
        match field {
            Field::InPort => out.in_port = Some(n()),
            Field::EthSrc => (out.eth_src, out.eth_src_mask) = (Some(v), mask),
            Field::EthDst => (out.eth_dst, out.eth_dst_mask) = (Some(v), mask),
            Field::EthType => out.eth_type = Some(n()),
            Field::VlanVid => out.vlan_vid = Some(n()),
            Field::VlanPcp => out.vlan_pcp = Some(n()),
            Field::VlanTci => (out.vlan_tci, out.vlan_tci_mask) = (Some(n()), nm()),
            Field::IpProto => out.ip_proto = Some(n()),
            Field::IpDscp => out.ip_dscp = Some(n()),
            Field::IpEcn => out.ip_ecn = Some(n()),
            Field::IpTos => out.ip_dscp = Some(n() >> 2),
            Field::IpTtl => out.ip_ttl = Some(n()),
            Field::IpFrag => out.ip_frag = Some(text),
            Field::Ipv4Src => out.ipv4_src = Some(text),
            Field::Ipv4Dst => out.ipv4_dst = Some(text),
            Field::Ipv6Src => out.ipv6_src = Some(text),
            Field::Ipv6Dst => out.ipv6_dst = Some(text),
            Field::TpSrc => (out.tp_src, out.tp_src_mask) = (Some(n()), nm()),
            Field::TpDst => (out.tp_dst, out.tp_dst_mask) = (Some(n()), nm()),
            Field::IcmpType => out.icmp_type = Some(n()),
            Field::IcmpCode => out.icmp_code = Some(n()),
            Field::ArpOp => out.arp_op = Some(n()),
            Field::ArpSpa => out.arp_spa = Some(text),
            Field::ArpTpa => out.arp_tpa = Some(text),
            Field::TunId => (out.tun_id, out.tun_id_mask) = (Some(parse_num(&v)), mask.as_deref().map(parse_num)),
            Field::TunSrc => out.tun_src = Some(text),
            Field::TunDst => out.tun_dst = Some(text),
        }
    }
    out
}

fn mac(field: &str, s: &str) -> Result<MacAddr, FieldError> {
    s.parse().map_err(|e: dataplane::wire::ethernet::BadMacAddr| FieldError::new(field, e.to_string()))
}

fn ipv4(field: &str, s: &str) -> Result<Ipv4Addr, FieldError> {
    s.parse().map_err(|_| FieldError::new(field, format!("'{s}' is not an IPv4 address")))
}

fn small<T: TryFrom<u32>>(field: &str, v: u32, max: u32) -> Result<T, FieldError> {
    if v > max {
        return Err(FieldError::new(field, format!("{v} is larger than {max}")));
    }
    T::try_from(v).map_err(|_| FieldError::new(field, format!("{v} is out of range")))
}

/// A typed action as a model action; `field` is the action's path (`actions[2]`).
pub fn action_to_model(a: &pb::Action, field: &str) -> Result<Action, FieldError> {
    use pb::action::Action as A;
    let f = |name: &str| format!("{field}.{name}");
    Ok(match a.action.as_ref().ok_or_else(|| FieldError::new(field, "no action set"))? {
        A::Output(p) => Action::Output(*p),
        A::Normal(true) => Action::Normal,
        A::Flood(true) => Action::Flood,
        A::InPort(true) => Action::InPort,
        A::PushVlan(t) => Action::PushVlan(small(&f("push_vlan"), *t, 0xffff)?),
        A::PopVlan(true) => Action::PopVlan,
        A::SetVlanVid(v) => Action::SetVlanVid(small(&f("set_vlan_vid"), *v, 4095)?),
        A::SetVlanPcp(v) => Action::SetVlanPcp(small(&f("set_vlan_pcp"), *v, 7)?),
        A::SetEthSrc(m) => Action::SetEthSrc(mac(&f("set_eth_src"), m)?),
        A::SetEthDst(m) => Action::SetEthDst(mac(&f("set_eth_dst"), m)?),
        A::SetIpv4Src(s) => Action::SetIpv4Src(ipv4(&f("set_ipv4_src"), s)?),
        A::SetIpv4Dst(s) => Action::SetIpv4Dst(ipv4(&f("set_ipv4_dst"), s)?),
        A::SetIpDscp(d) => Action::SetIpDscp(small(&f("set_ip_dscp"), *d, 63)?),
        A::DecTtl(true) => Action::DecTtl,
        A::SetTpSrc(p) => Action::SetTpSrc(small(&f("set_tp_src"), *p, 65535)?),
        A::SetTpDst(p) => Action::SetTpDst(small(&f("set_tp_dst"), *p, 65535)?),
        A::GotoTable(t) => Action::GotoTable(small(&f("goto_table"), *t, MAX_TABLES as u32 - 1)?),
        A::Counter(n) => Action::Counter(n.clone()),
        A::SetTunnelId(v) => Action::SetTunnelId(*v),
        A::SetTunDst(s) => Action::SetTunDst(ipv4(&f("set_tun_dst"), s)?),
        A::Normal(false) | A::Flood(false) | A::InPort(false) | A::PopVlan(false) | A::DecTtl(false) => {
            return Err(FieldError::new(field, "a flag action must be true"))
        }
    })
}

pub fn action_from_model(a: &Action) -> pb::Action {
    use pb::action::Action as A;
    let action = match a {
        Action::Output(p) => A::Output(*p),
        Action::Normal => A::Normal(true),
        Action::Flood => A::Flood(true),
        Action::InPort => A::InPort(true),
        Action::PushVlan(t) => A::PushVlan(*t as u32),
        Action::PopVlan => A::PopVlan(true),
        Action::SetVlanVid(v) => A::SetVlanVid(*v as u32),
        Action::SetVlanPcp(p) => A::SetVlanPcp(*p as u32),
        Action::SetEthSrc(m) => A::SetEthSrc(m.to_string()),
        Action::SetEthDst(m) => A::SetEthDst(m.to_string()),
        Action::SetIpv4Src(ip) => A::SetIpv4Src(ip.to_string()),
        Action::SetIpv4Dst(ip) => A::SetIpv4Dst(ip.to_string()),
        Action::SetIpDscp(d) => A::SetIpDscp(*d as u32),
        Action::DecTtl => A::DecTtl(true),
        Action::SetTpSrc(p) => A::SetTpSrc(*p as u32),
        Action::SetTpDst(p) => A::SetTpDst(*p as u32),
        Action::GotoTable(t) => A::GotoTable(*t as u32),
        Action::Counter(n) => A::Counter(n.clone()),
        Action::SetTunnelId(v) => A::SetTunnelId(*v),
        Action::SetTunDst(ip) => A::SetTunDst(ip.to_string()),
    };
    pb::Action { action: Some(action) }
}

pub fn actions_to_model(actions: &[pb::Action]) -> Result<Vec<Action>, FieldError> {
    actions.iter().enumerate().map(|(i, a)| action_to_model(a, &format!("actions[{i}]"))).collect()
}

pub fn flow_to_model(f: &pb::Flow) -> Result<FlowSpec, FieldError> {
    let matching = match &f.r#match {
        Some(m) => match_to_model(m)?,
        None => Match::ANY,
    };
    Ok(FlowSpec {
        table: small("table", f.table, MAX_TABLES as u32 - 1)?,
        priority: small("priority", f.priority.unwrap_or(DEFAULT_PRIORITY as u32), 65535)?,
        cookie: f.cookie,
        idle_timeout: small("idle_timeout", f.idle_timeout, 65535)?,
        hard_timeout: small("hard_timeout", f.hard_timeout, 65535)?,
        matching,
        actions: actions_to_model(&f.actions)?.into(),
    })
}

pub fn flow_from_model(f: &FlowSpec) -> pb::Flow {
    pb::Flow {
        table: f.table as u32,
        priority: Some(f.priority as u32),
        cookie: f.cookie,
        idle_timeout: f.idle_timeout as u32,
        hard_timeout: f.hard_timeout as u32,
        r#match: Some(match_from_model(&f.matching)),
        actions: f.actions.iter().map(action_from_model).collect(),
    }
}

pub fn filter_to_model(f: Option<&pb::FlowFilter>) -> Result<FlowFilter, FieldError> {
    let Some(f) = f else { return Ok(FlowFilter::default()) };
    let table = f.table.map(|t| small("filter.table", t, MAX_TABLES as u32 - 1)).transpose()?;
    let priority = f.priority.map(|p| small("filter.priority", p, 65535)).transpose()?;
    let matching = match &f.r#match {
        Some(m) => match_to_model(m).map_err(|e| e.under("filter"))?,
        None => Match::ANY,
    };
    let cookie = match (f.cookie, f.cookie_mask) {
        (None, None) => None,
        (Some(c), m) => {
            let m = m.unwrap_or(u64::MAX);
            Some((c & m, m))
        }
        (None, Some(_)) => return Err(FieldError::new("filter.cookie_mask", "needs filter.cookie")),
    };
    Ok(FlowFilter { table, matching, priority, cookie, out_port: f.out_port })
}

pub fn filter_from_model(f: &FlowFilter) -> pb::FlowFilter {
    pb::FlowFilter {
        table: f.table.map(|t| t as u32),
        r#match: Some(match_from_model(&f.matching)),
        priority: f.priority.map(|p| p as u32),
        cookie: f.cookie.map(|c| c.0),
        cookie_mask: f.cookie.map(|c| c.1),
        out_port: f.out_port,
    }
}

pub fn miss_to_model(field: &str, s: &str) -> Result<MissAction, FieldError> {
    s.parse::<MissAction>().map_err(|e| FieldError::new(field, e))
}

/// One typed transaction op as a model op; errors under `ops[i].<kind>`.
pub fn op_to_model(op: &pb::FlowOp, i: usize) -> Result<(FlowOp, &'static str), FieldError> {
    use pb::flow_op::Op;
    let prefix = |kind: &str| format!("ops[{i}].{kind}");
    match op.op.as_ref().ok_or_else(|| FieldError::new(format!("ops[{i}]"), "no operation set"))? {
        Op::Add(f) => Ok((FlowOp::Add(flow_to_model(f).map_err(|e| e.under(&prefix("add")))?), "add")),
        Op::Modify(m) => {
            let filter = filter_to_model(m.filter.as_ref()).map_err(|e| e.under(&prefix("modify")))?;
            let actions = actions_to_model(&m.actions).map_err(|e| e.under(&prefix("modify")))?;
            Ok((FlowOp::Modify { filter, actions: actions.into(), strict: m.strict }, "modify"))
        }
        Op::Delete(d) => {
            let filter = filter_to_model(d.filter.as_ref()).map_err(|e| e.under(&prefix("delete")))?;
            Ok((FlowOp::Delete { filter, strict: d.strict }, "delete"))
        }
        Op::AddText(t) => {
            let spec =
                dataplane::flow::parse_flow(t).map_err(|e| FieldError::new(prefix("add_text"), e.to_string()))?;
            Ok((FlowOp::Add(spec), "add_text"))
        }
        Op::SetMiss(s) => {
            let table = small("table", s.table, MAX_TABLES as u32 - 1).map_err(|e| e.under(&prefix("set_miss")))?;
            let miss = miss_to_model("miss", &s.miss).map_err(|e| e.under(&prefix("set_miss")))?;
            Ok((FlowOp::SetMiss { table, miss }, "set_miss"))
        }
    }
}

/// A packet description (exact fields) as a flow key.
pub fn packet_to_key(m: &pb::Match) -> Result<dataplane::flow::FlowKey, FieldError> {
    let masked = [
        ("eth_src_mask", m.eth_src_mask.is_some()),
        ("eth_dst_mask", m.eth_dst_mask.is_some()),
        ("vlan_tci_mask", m.vlan_tci_mask.is_some()),
        ("tp_src_mask", m.tp_src_mask.is_some()),
        ("tp_dst_mask", m.tp_dst_mask.is_some()),
        ("tun_id_mask", m.tun_id_mask.is_some()),
    ];
    if let Some((name, _)) = masked.iter().find(|(_, set)| *set) {
        return Err(FieldError::new(format!("fields.{name}"), "a packet has exact values, no masks"));
    }
    for (name, v) in
        [("ipv4_src", &m.ipv4_src), ("ipv4_dst", &m.ipv4_dst), ("ipv6_src", &m.ipv6_src), ("ipv6_dst", &m.ipv6_dst)]
    {
        if v.as_deref().is_some_and(|t| t.contains('/')) {
            return Err(FieldError::new(format!("fields.{name}"), "a packet has exact values, no prefixes"));
        }
    }
    if m.in_port.is_none() {
        return Err(FieldError::new("fields.in_port", "a traced packet needs its ingress port"));
    }
    Ok(match_to_model(m)
        .map_err(|e| FieldError { field: e.field.replacen("match.", "fields.", 1), message: e.message })?
        .value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::flow::key::slot;
    use dataplane::flow::parse_flow;

    #[test]
    fn flows_round_trip_through_the_typed_api() {
        for text in [
            "table=0,priority=100,ip,in_port=1,nw_dst=10.0.0.0/24,actions=output:2",
            "table=3,priority=7,cookie=0x2a,idle_timeout=10,hard_timeout=60,udp6,ipv6_src=2001:db8::/48,tp_src=53,actions=NORMAL",
            "table=0,priority=1,arp,arp_op=1,arp_tpa=10.0.0.0/8,actions=FLOOD",
            "table=0,priority=9,dl_src=02:00:00:00:00:00/ff:ff:ff:00:00:00,dl_vlan=10,actions=pop_vlan,output:1",
            "table=0,priority=9,icmp,icmp_type=8,icmp_code=0,actions=IN_PORT",
            "table=0,priority=9,ip,ip_dscp=46,nw_ttl=1,nw_frag=later,actions=dec_ttl,counter:ttl-one",
            "table=0,priority=9,tcp,tp_dst=0x50/0xfff0,actions=mod_tp_dst:8080,mod_nw_src:10.1.1.1,goto_table:4",
            "table=0,priority=9,tun_id=0x64/0xff,tun_src=192.0.2.1,actions=output:1",
            "table=0,priority=9,vlan_tci=0x0000,actions=push_vlan:0x8100,mod_vlan_vid:5,mod_vlan_pcp:3,mod_dl_src:02:00:00:00:00:01,output:2",
        ] {
            let spec = parse_flow(text).unwrap();
            let typed = flow_from_model(&spec);
            let back = flow_to_model(&typed).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(back, spec, "{text}");
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let mut f = flow_from_model(&parse_flow("ip,nw_dst=10.0.0.1,actions=output:1").unwrap());
        f.r#match.as_mut().unwrap().ipv4_dst = Some("10.0.0.300".into());
        let e = flow_to_model(&f).unwrap_err();
        assert_eq!(e.field, "match.ipv4_dst");
        f.r#match.as_mut().unwrap().ipv4_dst = Some("10.0.0.3".into());
        f.actions.push(pb::Action { action: Some(pb::action::Action::SetVlanVid(5000)) });
        let e = flow_to_model(&f).unwrap_err();
        assert_eq!((e.field.as_str(), e.message.as_str()), ("actions[1].set_vlan_vid", "5000 is larger than 4095"));
        let op = pb::FlowOp { op: Some(pb::flow_op::Op::Add(f)) };
        let e = op_to_model(&op, 4).unwrap_err();
        assert_eq!(e.field, "ops[4].add.actions[1].set_vlan_vid");
    }

    #[test]
    fn packets_have_no_masks() {
        let m = pb::Match {
            in_port: Some(1),
            ipv4_dst: Some("10.0.0.0/8".into()),
            eth_type: Some(0x800),
            ..Default::default()
        };
        assert_eq!(packet_to_key(&m).unwrap_err().field, "fields.ipv4_dst");
        let m = pb::Match { ipv4_dst: Some("10.0.0.1".into()), eth_type: Some(0x800), ..Default::default() };
        assert_eq!(packet_to_key(&m).unwrap_err().field, "fields.in_port");
        let m = pb::Match {
            in_port: Some(2),
            ipv4_dst: Some("10.0.0.1".into()),
            eth_type: Some(0x800),
            ..Default::default()
        };
        let k = packet_to_key(&m).unwrap();
        assert_eq!((k.in_port(), slot::NW_DST.get(&k)), (2, 0x0a00_0001));
    }
}
