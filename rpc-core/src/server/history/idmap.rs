//! A session's entries by request id (see [`IdMap`]).

use std::collections::VecDeque;

/// A session's entries by request id: a deque kept sorted by id. A
/// client's ids grow by one per call and its entries leave mostly in id
/// order (the ack floor), so an entry is added at the back and removed at
/// the front: no search and no node allocation, where a `BTreeMap` spent
/// about a tenth of a TCP call's server time. Lookups are binary searches;
/// out-of-order ids (retransmissions, hostile clients) cost a shift within
/// one session's entries, which the caps bound.
#[derive(Debug, Clone)]
pub(super) struct IdMap<V> {
    items: VecDeque<(u64, V)>,
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        IdMap {
            items: VecDeque::new(),
        }
    }
}

impl<V> IdMap<V> {
    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Where `id` is (`Ok`) or would go (`Err`); the ends are tried first.
    pub(super) fn position(&self, id: u64) -> Result<usize, usize> {
        match self.items.back() {
            None => return Err(0),
            Some(&(last, _)) if id > last => return Err(self.items.len()),
            Some(&(last, _)) if id == last => return Ok(self.items.len() - 1),
            Some(_) => {}
        }
        self.items.binary_search_by_key(&id, |&(k, _)| k)
    }

    pub(super) fn get(&self, id: &u64) -> Option<&V> {
        let i = self.position(*id).ok()?;
        self.items.get(i).map(|(_, v)| v)
    }

    pub(super) fn get_mut(&mut self, id: &u64) -> Option<&mut V> {
        let i = self.position(*id).ok()?;
        self.items.get_mut(i).map(|(_, v)| v)
    }

    /// Adds or replaces; returns the replaced value.
    pub(super) fn insert(&mut self, id: u64, value: V) -> Option<V> {
        match self.position(id) {
            Ok(i) => self
                .items
                .get_mut(i)
                .map(|(_, v)| std::mem::replace(v, value)),
            Err(i) => {
                self.items.insert(i, (id, value));
                None
            }
        }
    }

    pub(super) fn remove(&mut self, id: &u64) -> Option<V> {
        if self.items.front().is_some_and(|&(first, _)| first == *id) {
            return self.items.pop_front().map(|(_, v)| v);
        }
        let i = self.position(*id).ok()?;
        self.items.remove(i).map(|(_, v)| v)
    }

    pub(super) fn first_key_value(&self) -> Option<(&u64, &V)> {
        self.items.front().map(|(k, v)| (k, v))
    }

    /// In id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&u64, &V)> {
        self.items.iter().map(|(k, v)| (k, v))
    }
}
