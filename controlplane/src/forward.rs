use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use claw_proto::v1::claw_client::ClawClient;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

/// Metadata key carrying the actor a client states (until authentication).
pub const ACTOR_KEY: &str = "claw-actor";
/// Set on requests one member forwards to another, so they are never forwarded twice.
pub const FORWARDED_KEY: &str = "claw-forwarded";
/// Set on Unavailable answers: the address of the leader, when known.
pub const LEADER_KEY: &str = "claw-leader";

/// Keeps one lazily connected channel per peer member for forwarding client
/// requests to the leader.
#[derive(Default)]
pub struct Forwarder {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Forwarder {
    pub fn client(&self, addr: &str) -> Result<ClawClient<Channel>, Status> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(addr) {
            return Ok(ClawClient::new(ch.clone()));
        }
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::internal(format!("leader address {addr:?} is not usable: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let ch = ep.connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ClawClient::new(ch))
    }

    /// Builds the request to send on: same message, the caller's actor, and
    /// the forwarded mark.
    pub fn request<T>(md: &tonic::metadata::MetadataMap, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(actor) = md.get(ACTOR_KEY) {
            req.metadata_mut().insert(ACTOR_KEY, actor.clone());
        }
        req.metadata_mut().insert(FORWARDED_KEY, tonic::metadata::MetadataValue::from_static("1"));
        req
    }
}
