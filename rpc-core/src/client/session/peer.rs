//! What a client knows of one server ([`Peer`]): the incarnation it last
//! showed and the address-validation cookie it gave. A [`Session`] keeps
//! one, for its server; the multicast client one per member.
//!
//! [`Session`]: super::Session

/// What a client knows of one server (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct Peer {
    incarnation: u64,
    cookie: u64,
}

impl Peer {
    /// The last incarnation the server showed (0: unknown).
    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The cookie the server last gave (0: none).
    pub(crate) fn cookie(&self) -> u64 {
        self.cookie
    }

    /// Notes the incarnation a message of the server carried (0: none,
    /// ignored). Returns whether it became known with this message.
    pub(crate) fn saw_incarnation(&mut self, incarnation: u64) -> bool {
        if incarnation == 0 || incarnation == self.incarnation {
            return false;
        }
        let was_unknown = self.incarnation == 0;
        self.incarnation = incarnation;
        was_unknown
    }

    /// Notes the cookie a message of the server carried (0: none, ignored).
    pub(crate) fn saw_cookie(&mut self, cookie: u64) {
        if cookie != 0 {
            self.cookie = cookie;
        }
    }
}
