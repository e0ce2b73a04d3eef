//! A cluster: the nodes of one test, sharing its [`TestDir`].
//!
//! The nodes are dropped (killed) before the directory. The directory is
//! removed only by [`Cluster::passed`]; a test that fails in any way (a
//! panic, an early `Err`, a timeout dropping its future) keeps the nodes'
//! complete logs, which its error messages name.

use crate::dir::TestDir;
use crate::node::{Node, NodeBuilder, NodeError};
use std::io;
use std::net::SocketAddr;
use std::path::Path;

/// The nodes of one test, each with its files under `<dir>/<name>/`.
#[derive(Debug)]
pub struct Cluster {
    // Declared before `dir`: dropped, so killed, first.
    nodes: Vec<Node>,
    dir: TestDir,
}

impl Cluster {
    /// An empty cluster in a fresh temporary [`TestDir`].
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new() -> io::Result<Cluster> {
        Ok(Cluster::in_dir(TestDir::new()?))
    }

    /// An empty cluster in `dir`.
    pub fn in_dir(dir: TestDir) -> Cluster {
        Cluster {
            nodes: Vec::new(),
            dir,
        }
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts a node (see [`NodeBuilder::start`]) and adds it.
    ///
    /// # Errors
    /// [`NodeError::DuplicateName`] when a node has the name already;
    /// otherwise as [`NodeBuilder::start`].
    pub fn start(&mut self, node: NodeBuilder) -> Result<&mut Node, NodeError> {
        if self.node(node.name()).is_some() {
            return Err(NodeError::DuplicateName {
                node: node.name().to_owned(),
            });
        }
        let node = node.start(self.dir.path())?;
        self.nodes.push(node);
        let last = self.nodes.len() - 1;
        Ok(&mut self.nodes[last])
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name() == name)
    }

    /// The node called `name`, to control it.
    pub fn node_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.name() == name)
    }

    /// The nodes, in the order they were started.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The nodes, to control them.
    pub fn nodes_mut(&mut self) -> &mut [Node] {
        &mut self.nodes
    }

    /// The nodes' addresses, in the order they were started.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(Node::addr).collect()
    }

    /// Keeps the directory after the test, whatever its outcome.
    pub fn keep_dir(&mut self) {
        self.dir.keep();
    }

    /// The test passed: kills the nodes still running, then removes the
    /// directory (see [`TestDir::passed`]). Call it last, once every
    /// check is done; a cluster dropped without it keeps its directory.
    pub fn passed(self) {
        let Cluster { nodes, dir } = self;
        drop(nodes);
        dir.passed();
    }
}
