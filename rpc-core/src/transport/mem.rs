//! The in-memory datagram network (owned by the fault-injection work).
