//! `TunnelService`: tunnel ports and the underlay neighbor table.

use std::net::Ipv4Addr;

use dataplane::stats::DropReason;
use dataplane::switch::{TunnelChangeError, TunnelView};
use dataplane::tunnel::{TunnelConfig, TunnelKind};
use dataplane::wire::MacAddr;
use tonic::{Request, Response, Status};
use vswitch_proto::v1 as pb;

use crate::service::Api;

fn optional_ip(field: &str, s: &str) -> Result<Option<Ipv4Addr>, Status> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| Status::invalid_argument(format!("{field}: '{s}' is not an IPv4 address")))
}

/// A typed tunnel as a configuration; errors name the field under `tunnel.`.
pub fn tunnel_to_model(t: &pb::TunnelSpec) -> Result<TunnelConfig, Status> {
    let kind: TunnelKind = t.kind.parse().map_err(|e| Status::invalid_argument(format!("tunnel.kind: {e}")))?;
    if t.dst_port > 65535 {
        return Err(Status::invalid_argument(format!("tunnel.dst_port: {} is larger than 65535", t.dst_port)));
    }
    if t.uplink.is_empty() {
        return Err(Status::invalid_argument("tunnel.uplink: the name of an uplink port is required"));
    }
    Ok(TunnelConfig {
        name: t.name.clone(),
        number: t.number,
        kind,
        uplink: t.uplink.clone(),
        local_ip: optional_ip("tunnel.local_ip", &t.local_ip)?,
        remote_ip: optional_ip("tunnel.remote_ip", &t.remote_ip)?,
        vni: t.vni,
        dst_port: (t.dst_port != 0).then_some(t.dst_port as u16),
    })
}

pub fn tunnel_spec_from_model(c: &TunnelConfig) -> pb::TunnelSpec {
    pb::TunnelSpec {
        name: c.name.clone(),
        number: c.number,
        kind: c.kind.name().to_string(),
        uplink: c.uplink.clone(),
        local_ip: c.local_ip.map(|i| i.to_string()).unwrap_or_default(),
        remote_ip: c.remote_ip.map(|i| i.to_string()).unwrap_or_default(),
        vni: c.vni,
        dst_port: c.dst_port.unwrap_or(0) as u32,
    }
}

fn tunnel_to_pb(v: TunnelView) -> pb::Tunnel {
    let c = &v.counters;
    pb::Tunnel {
        spec: Some(tunnel_spec_from_model(&v.config)),
        local_ip: v.local_ip.to_string(),
        dst_port: v.dst_port as u32,
        counters: Some(pb::PortCounters {
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            rx_dropped: c.rx_dropped(),
            tx_dropped: c.tx_dropped(),
        }),
        drops: DropReason::ALL
            .iter()
            .filter(|r| c.drops[**r as usize] > 0)
            .map(|&r| pb::DropCounter {
                stage: r.stage().to_string(),
                reason: r.name().to_string(),
                description: r.description().to_string(),
                packets: c.drops[r as usize],
            })
            .collect(),
    }
}

fn change_status(e: TunnelChangeError) -> Status {
    match e {
        TunnelChangeError::Invalid { field, message } => Status::invalid_argument(format!("tunnel.{field}: {message}")),
        TunnelChangeError::Exists { field, message } => Status::already_exists(format!("tunnel.{field}: {message}")),
        TunnelChangeError::NotFound(_) => Status::not_found(format!("name: {e}")),
        TunnelChangeError::InUse { .. } => Status::failed_precondition(format!("name: {e}")),
        TunnelChangeError::Full => Status::resource_exhausted(e.to_string()),
    }
}

fn parse_ip(field: &str, s: &str) -> Result<Ipv4Addr, Status> {
    optional_ip(field, s)?.ok_or_else(|| Status::invalid_argument(format!("{field}: an IPv4 address is required")))
}

#[tonic::async_trait]
impl pb::tunnel_service_server::TunnelService for Api {
    async fn add_tunnel(&self, req: Request<pb::AddTunnelRequest>) -> Result<Response<pb::Tunnel>, Status> {
        let req = req.into_inner();
        let spec = req.tunnel.ok_or_else(|| Status::invalid_argument("tunnel: required"))?;
        let config = tunnel_to_model(&spec)?;
        let switch = self.switch().clone();
        let view = tokio::task::spawn_blocking(move || switch.add_tunnel(config))
            .await
            .map_err(|e| Status::internal(format!("tunnel task failed: {e}")))?
            .map_err(change_status)?;
        Ok(Response::new(tunnel_to_pb(view)))
    }

    async fn remove_tunnel(
        &self,
        req: Request<pb::RemoveTunnelRequest>,
    ) -> Result<Response<pb::RemoveTunnelResponse>, Status> {
        let name = req.into_inner().name;
        if name.is_empty() {
            return Err(Status::invalid_argument("name: the tunnel's name is required"));
        }
        let switch = self.switch().clone();
        tokio::task::spawn_blocking(move || switch.remove_tunnel(&name))
            .await
            .map_err(|e| Status::internal(format!("tunnel task failed: {e}")))?
            .map_err(change_status)?;
        Ok(Response::new(pb::RemoveTunnelResponse {}))
    }

    async fn list_tunnels(
        &self,
        _: Request<pb::ListTunnelsRequest>,
    ) -> Result<Response<pb::ListTunnelsResponse>, Status> {
        let tunnels = self.switch().tunnels().into_iter().map(tunnel_to_pb).collect();
        let uplinks = self
            .switch()
            .uplinks()
            .into_iter()
            .map(|u| pb::Uplink {
                port: u.name,
                ip: u.net.to_string(),
                gateway: u.gateway.map(|g| g.to_string()).unwrap_or_default(),
                mac: MacAddr(u.mac).to_string(),
                mtu: u.mtu as u32,
                inner_mtu: u.mtu.saturating_sub(dataplane::tunnel::wire::MTU_OVERHEAD) as u32,
            })
            .collect();
        Ok(Response::new(pb::ListTunnelsResponse { tunnels, uplinks }))
    }

    async fn list_neighbors(
        &self,
        _: Request<pb::ListNeighborsRequest>,
    ) -> Result<Response<pb::ListNeighborsResponse>, Status> {
        let neighbors = self
            .switch()
            .neighbors()
            .into_iter()
            .map(|n| pb::Neighbor {
                ip: n.ip.to_string(),
                mac: n.mac.map(|m| MacAddr(m).to_string()).unwrap_or_default(),
                r#static: n.is_static,
            })
            .collect();
        Ok(Response::new(pb::ListNeighborsResponse { neighbors }))
    }

    async fn add_neighbor(
        &self,
        req: Request<pb::AddNeighborRequest>,
    ) -> Result<Response<pb::AddNeighborResponse>, Status> {
        let req = req.into_inner();
        let ip = parse_ip("ip", &req.ip)?;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
            return Err(Status::invalid_argument(format!("ip: {ip} must be a unicast address")));
        }
        let mac: MacAddr = req.mac.parse().map_err(|e| Status::invalid_argument(format!("mac: {e}")))?;
        if !mac.is_valid_source() {
            return Err(Status::invalid_argument(format!("mac: {mac} must be unicast and non-zero")));
        }
        if !self.switch().add_neighbor(ip, mac) {
            return Err(Status::resource_exhausted("ip: the neighbor table is full"));
        }
        Ok(Response::new(pb::AddNeighborResponse {}))
    }

    async fn remove_neighbor(
        &self,
        req: Request<pb::RemoveNeighborRequest>,
    ) -> Result<Response<pb::RemoveNeighborResponse>, Status> {
        let ip = parse_ip("ip", &req.into_inner().ip)?;
        if !self.switch().remove_neighbor(ip) {
            return Err(Status::not_found(format!("ip: no neighbor {ip}")));
        }
        Ok(Response::new(pb::RemoveNeighborResponse {}))
    }
}
