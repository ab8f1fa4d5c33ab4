//! # devnet-kube: the cluster side of devnet
//!
//! **Layer:** beside the engine, used by the CLI before it starts the
//! engine. [`discover`] turns API objects into the cluster's networks
//! (pure, fixture-tested); [`cluster`] reads the kubeconfig and talks to the
//! API server; [`relay`] installs, checks and removes the relay;
//! [`enrol`] gets the user's client certificate from the relay through the
//! port-forward; [`credentials`] keeps it in the OS keyring;
//! [`portforward`] is the API-server transport to the relay.
//!
//! **What it does not do:** touch the OS network (the engine does), or
//! speak the tunnel protocol (devnet-proto does; the port-forward only
//! carries its bytes).

pub mod cluster;
pub mod credentials;
pub mod discover;
pub mod enrol;
pub mod portforward;
pub mod relay;

pub use cluster::{Cluster, ClusterOptions, InvokingUser, KubeError};
