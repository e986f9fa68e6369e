use openraft::{BasicNode, RaftNetworkFactory};

use crate::network_client::NetworkClient;
use crate::TypeConfig;

/// Creates one [`NetworkClient`] per replication target, each with its own
/// lazily connected gRPC channel to the target's `BasicNode.addr`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NetworkClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> NetworkClient {
        NetworkClient::new(target, node.clone())
    }
}
