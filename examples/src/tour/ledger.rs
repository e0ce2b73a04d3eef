//! The ledger: what the calls should have done to the counter; and the
//! closing summary (server, proxy and client counters), which checks the
//! counter against it.

use crate::doors::Door;
use crate::steps::Tour;
use rpc_core::fault::ProxyStats;
use rpc_core::server::ServerStats;

/// What the tour expects of the server's counter: every call whose
/// outcome the caller knows is entered when it returns; calls whose outcome
/// is unknown by design (one-way calls, calls past their deadline) are
/// entered as the server is seen to run them, and reported as such.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// The value if every call ran exactly once.
    pub(crate) value: i64,
    /// Executions of non-idempotent operations.
    pub(crate) executions: u64,
}

impl Ledger {
    /// A non-idempotent operation that added `delta` ran once.
    pub(crate) fn ran(&mut self, delta: i64) {
        self.value += delta;
        self.executions += 1;
    }
}

/// Prints the server's, the proxy's and the clients' counters, and enters a
/// failure when the counter does not match the ledger.
pub(crate) fn summary(tour: &mut Tour, proxy: &ProxyStats, doors: &[Box<dyn Door>]) {
    let s: ServerStats = tour.server.stats();
    let value = tour.counter.value();
    let executions = tour.counter.executions();
    println!();
    println!("server   value {value}, executions {executions} (idempotent reads {}), incarnation {:016x}", tour.counter.idempotent_executions(), tour.server.incarnation());
    println!(
        "         requests {}, replies {}, duplicates replayed {}, in progress {}, accepts {}, unimplemented {}, past deadline {}",
        s.requests, s.replies, s.duplicates_replayed, s.in_progress_hits, s.accepts, s.unimplemented, s.deadline_exceeded
    );
    println!(
        "         history: {} entries ({} completed, {} running) in {} sessions; evicted {} (acknowledged {})",
        s.history_len, s.history_completed, s.history_in_progress, s.history_sessions, s.evicted_total(), s.evicted_ack
    );
    let t = tour.server.tcp_stats();
    println!(
        "         tcp doors: {} connections accepted, {} frames in, {} frames out",
        t.connections_accepted, t.frames_received, t.frames_sent
    );
    println!(
        "proxy    to server: {} received, {} dropped, {} duplicated; to client: {} received, {} dropped, {} duplicated",
        proxy.client_to_server.received,
        proxy.client_to_server.dropped,
        proxy.client_to_server.duplicated,
        proxy.server_to_client.received,
        proxy.server_to_client.dropped,
        proxy.server_to_client.duplicated
    );
    let retx: Vec<String> = doors
        .iter()
        .map(|d| {
            format!(
                "{} {}",
                d.name(),
                d.retransmissions().map_or("-".into(), |n| n.to_string())
            )
        })
        .collect();
    println!("clients  retransmissions: {}", retx.join(", "));

    if (value, executions) == (tour.ledger.value, tour.ledger.executions) {
        println!("ledger   every call accounted for: value {value} and {executions} executions, as called");
    } else {
        tour.report.failures.push(format!(
            "the counter (value {value}, executions {executions}) does not match the calls made (value {}, executions {})",
            tour.ledger.value, tour.ledger.executions
        ));
    }
}
