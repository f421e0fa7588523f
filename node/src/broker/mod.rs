//! What faces clients: the node's start, its connections, the Kafka APIs,
//! the admin configs and `/metrics`. The top layer: it uses every other.

pub mod api;
pub mod configs;
pub mod conn;
pub mod http;
pub mod sasl;
pub mod server;
