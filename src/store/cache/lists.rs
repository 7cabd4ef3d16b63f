//! The two intrusive lists of a [`NamedCache`](super::NamedCache) threaded through its slab
//! by slot index: LRU order (eviction) and dirty order (flush in insertion order).

use super::NamedCache;

/// No slot: the end of an intrusive list.
pub(super) const NIL: u32 = u32::MAX;

/// Links of one slot in an intrusive list (slot indices).
#[derive(Debug, Clone, Copy)]
pub(super) struct Link {
    pub(super) prev: u32,
    pub(super) next: u32,
}

pub(super) const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
};

/// Head and tail of an intrusive list threaded through the slots.
#[derive(Debug, Clone, Copy)]
pub(super) struct List {
    pub(super) head: u32,
    pub(super) tail: u32,
    pub(super) len: usize,
}

pub(super) const EMPTY_LIST: List = List {
    head: NIL,
    tail: NIL,
    len: 0,
};

/// Which intrusive list an operation works on.
#[derive(Clone, Copy)]
pub(super) enum Which {
    Lru,
    Dirty,
}

impl NamedCache {
    pub(super) fn list(&mut self, which: Which) -> &mut List {
        match which {
            Which::Lru => &mut self.lru,
            Which::Dirty => &mut self.dirty,
        }
    }

    pub(super) fn link(&mut self, which: Which, s: u32) -> &mut Link {
        let slot = &mut self.slots[s as usize];
        match which {
            Which::Lru => &mut slot.lru,
            Which::Dirty => &mut slot.dirty,
        }
    }

    pub(super) fn push_back(&mut self, which: Which, s: u32) {
        let tail = self.list(which).tail;
        *self.link(which, s) = Link {
            prev: tail,
            next: NIL,
        };
        if tail == NIL {
            self.list(which).head = s;
        } else {
            self.link(which, tail).next = s;
        }
        let list = self.list(which);
        list.tail = s;
        list.len += 1;
    }

    pub(super) fn unlink(&mut self, which: Which, s: u32) {
        let Link { prev, next } = std::mem::replace(self.link(which, s), UNLINKED);
        if prev == NIL {
            self.list(which).head = next;
        } else {
            self.link(which, prev).next = next;
        }
        if next == NIL {
            self.list(which).tail = prev;
        } else {
            self.link(which, next).prev = prev;
        }
        self.list(which).len -= 1;
    }
}
