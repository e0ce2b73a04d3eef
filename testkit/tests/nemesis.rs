//! The nemesis: schedules are a function of the seed and stay within
//! their bounds; a schedule with every kind of step runs against real
//! nodes behind a UDP network; a step that cannot be applied is a clear
//! error naming the seed, the step, the node and its log files.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use rpc_testkit::{Cluster, Fault, FaultKind, Nemesis, Net, NodeBuilder, Schedule, StepError};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;

/// The bound of every wait: only a hung test reaches it.
const BOUND: Duration = Duration::from_secs(30);

fn echo(name: &str) -> NodeBuilder {
    NodeBuilder::new(name, env!("CARGO_BIN_EXE_kit-echo-node")).args(["--listen", "{addr}"])
}

/// Replays a schedule against the states it implies, checking each step
/// is possible there; returns the most nodes faulty at once.
fn replay(schedule: &Schedule, nodes: &[&str]) -> usize {
    let (mut down, mut paused) = (BTreeSet::new(), BTreeSet::new());
    let mut net_fault = false;
    let mut worst = 0;
    for step in schedule.steps() {
        match step {
            Fault::Kill(n) => {
                assert!(
                    nodes.contains(&n.as_str()) && !paused.contains(n) && down.insert(n.clone())
                )
            }
            Fault::Restart(n) => assert!(down.remove(n), "{step}"),
            Fault::Pause(n) => assert!(!down.contains(n) && paused.insert(n.clone()), "{step}"),
            Fault::Resume(n) => assert!(paused.remove(n), "{step}"),
            Fault::Heal => {
                assert!(net_fault, "a heal ends a network fault");
                net_fault = false;
            }
            other => {
                assert!(!net_fault, "one network fault at a time: {other}");
                net_fault = true;
            }
        }
        worst = worst.max(down.len() + paused.len());
    }
    assert!(
        down.is_empty() && paused.is_empty() && !net_fault,
        "ends healthy:\n{schedule}"
    );
    worst
}

#[test]
fn a_schedule_is_a_function_of_its_seed_and_keeps_its_bounds() {
    let nodes = ["a", "b", "c", "d", "e"];
    let nemesis = |seed| {
        Nemesis::new(seed)
            .nodes(nodes)
            .members(["a", "b", "c", "d", "e", "client"])
            .steps(40)
            .max_faulty(2)
    };
    let mut distinct = BTreeSet::new();
    for seed in 0..20 {
        let schedule = nemesis(seed).schedule();
        assert_eq!(schedule, nemesis(seed).schedule());
        assert_eq!(schedule.to_string(), nemesis(seed).schedule().to_string());
        assert_eq!(schedule.seed(), seed);
        assert!(replay(&schedule, &nodes) <= 2);
        distinct.insert(schedule.to_string());
    }
    assert_eq!(distinct.len(), 20, "different seeds, different schedules");

    let text = nemesis(5).schedule().to_string();
    assert!(
        text.starts_with("nemesis seed 5 (RPC_NEMESIS_SEED=5 repeats it)"),
        "{text}"
    );
    assert!(text.contains("\n    1. "), "numbered steps: {text}");

    // Only the kinds asked for start.
    let network_only = Nemesis::new(1)
        .nodes(nodes)
        .members(["a", "b"])
        .faults([FaultKind::Partition, FaultKind::LossBurst])
        .steps(30)
        .schedule();
    assert!(network_only.steps().iter().all(|s| matches!(
        s,
        Fault::Partition(..) | Fault::LossBurst { .. } | Fault::Heal
    )));
    assert!(network_only
        .steps()
        .iter()
        .any(|s| matches!(s, Fault::Partition(..))));
}

/// Sends a datagram to `to` and waits for the echo.
async fn ping(socket: &UdpSocket, to: SocketAddr) {
    socket.send_to(b"ping", to).await.unwrap();
    let mut buf = [0u8; 8];
    let (n, _) = tokio::time::timeout(BOUND, socket.recv_from(&mut buf))
        .await
        .expect("an echo within the bound")
        .unwrap();
    assert_eq!(&buf[..n], b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_step_runs_against_real_nodes() {
    let mut cluster = Cluster::new().unwrap();
    let mut net = Net::udp(9);
    for name in ["a", "b", "c"] {
        let addr = cluster.start(echo(name)).unwrap().addr();
        net.add_node(name, addr).await.unwrap();
    }
    net.add_client("client").await.unwrap();
    let s = String::from;
    let steps = vec![
        Fault::Kill(s("a")),
        Fault::Pause(s("b")),
        Fault::Partition(vec![s("a"), s("client")], vec![s("b"), s("c")]),
        Fault::Restart(s("a")),
        Fault::Resume(s("b")),
        Fault::Heal,
        Fault::Isolate(s("c")),
        Fault::Heal,
        Fault::LossBurst {
            node: s("c"),
            loss: 1.0,
        },
    ];
    let schedule = Schedule::from_steps(1, steps);
    let (mut cluster, mut net, seen) = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        schedule
            .run(&mut cluster, Some(&mut net), |i, step| {
                seen.push(format!("{i}. {step}"))
            })
            .unwrap();
        (cluster, net, seen)
    })
    .await
    .unwrap();
    assert_eq!(seen.len(), 9);
    assert_eq!(seen[2], "3. partition [a, client] | [b, c]");
    assert_eq!(cluster.node("a").unwrap().run(), 2, "a was restarted");
    assert!(cluster
        .nodes_mut()
        .iter_mut()
        .all(|n| n.is_running() && !n.is_paused()));
    let burst = net.udp_proxy("client", "c").unwrap().config();
    assert_eq!(
        (burst.client_to_server.loss, burst.server_to_client.loss),
        (1.0, 1.0)
    );
    assert!(net.is_cut("a", "b").is_ok_and(|cut| !cut));

    net.heal().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for name in ["a", "b", "c"] {
        ping(&client, net.addr("client", name).unwrap()).await;
    }
    cluster.passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_cannot_apply_names_the_seed_the_step_the_node_and_its_logs() {
    let mut cluster = Cluster::new().unwrap();
    let node = cluster.start(echo("a")).unwrap();
    node.kill().unwrap();
    let stderr = node.logs().stderr.display().to_string();
    let mut net = Net::udp(2);
    net.add_node("a", cluster.node("a").unwrap().addr())
        .await
        .unwrap();
    let s = String::from;

    let run = |steps: Vec<Fault>, cluster: &mut Cluster, net: Option<&mut Net>| {
        Schedule::from_steps(42, steps)
            .run(cluster, net, |_, _| {})
            .unwrap_err()
    };
    // A node already dead when paused.
    let err = run(vec![Fault::Pause(s("a"))], &mut cluster, Some(&mut net));
    let text = err.to_string();
    assert!(matches!(*err.source, StepError::Node(_)), "{err:?}");
    for part in [
        "RPC_NEMESIS_SEED=42",
        "step 1 (pause a)",
        "node \"a\" is not running",
        &stderr,
    ] {
        assert!(text.contains(part), "{part:?} in {text}");
    }
    // A node the cluster does not have; a member the network does not have.
    let err = run(vec![Fault::Kill(s("zz"))], &mut cluster, Some(&mut net));
    assert_eq!(
        err.source.to_string(),
        "unknown node \"zz\" (the cluster has: a)"
    );
    let err = run(
        vec![
            Fault::Restart(s("a")),
            Fault::Partition(vec![s("a")], vec![s("ghost")]),
        ],
        &mut cluster,
        Some(&mut net),
    );
    assert_eq!(err.step, 2);
    assert!(
        err.to_string()
            .contains("unknown node \"ghost\" (the network has: a)"),
        "{err}"
    );
    // A network fault without a network.
    let err = run(vec![Fault::Heal], &mut cluster, None);
    assert!(matches!(*err.source, StepError::NoNet), "{err}");
    cluster.passed();
}
