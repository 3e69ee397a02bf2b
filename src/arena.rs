//! Typed generational handles over `slab::Slab`. A `Key<T>` carries the slab
//! index and the generation of the value it was handed out for; an
//! `Arena<T>` refuses a key whose generation is not the slot's current one,
//! so a handle kept by a timer, a pool or another entry can never reach a
//! value that later reused its slot. Poll tokens carry only the index (they
//! have room for no more); a stale readiness event is harmless because it
//! only sets readiness flags on whatever lives there now.

use std::fmt;
use std::marker::PhantomData;

use slab::Slab;

/// A handle to a value in an `Arena<T>`.
pub(crate) struct Key<T> {
    index: usize,
    generation: u64,
    _kind: PhantomData<fn() -> T>,
}

// Derives would require `T: Clone` and so on; a key is plain data whatever
// `T` is.
impl<T> Clone for Key<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Key<T> {}
impl<T> PartialEq for Key<T> {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index && self.generation == other.generation
    }
}
impl<T> Eq for Key<T> {}
impl<T> PartialOrd for Key<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Key<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.index, self.generation).cmp(&(other.index, other.generation))
    }
}
impl<T> std::hash::Hash for Key<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.index.hash(state);
        self.generation.hash(state);
    }
}
impl<T> fmt::Debug for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.index, self.generation)
    }
}
impl<T> fmt::Display for Key<T> {
    /// The index alone, as the logs always named entries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.index)
    }
}

impl<T> Key<T> {
    /// The slab index, for a poll token or the pool's bookkeeping.
    pub(crate) fn index(self) -> usize {
        self.index
    }
}

/// A slab whose entries remember the generation they were inserted in.
pub(crate) struct Arena<T> {
    slab: Slab<(u64, T)>,
    next_generation: u64,
}

impl<T> Default for Arena<T> {
    fn default() -> Self {
        Arena {
            slab: Slab::new(),
            next_generation: 1,
        }
    }
}

impl<T> Arena<T> {
    /// The key the next `insert` will return (to register a source under
    /// its token before the value exists).
    pub(crate) fn next_key(&self) -> Key<T> {
        Key {
            index: self.slab.vacant_key(),
            generation: self.next_generation,
            _kind: PhantomData,
        }
    }

    pub(crate) fn insert(&mut self, value: T) -> Key<T> {
        let key = self.next_key();
        self.next_generation += 1;
        self.slab.insert((key.generation, value));
        key
    }

    pub(crate) fn get(&self, key: Key<T>) -> Option<&T> {
        self.slab
            .get(key.index)
            .filter(|(generation, _)| *generation == key.generation)
            .map(|(_, value)| value)
    }

    pub(crate) fn get_mut(&mut self, key: Key<T>) -> Option<&mut T> {
        self.slab
            .get_mut(key.index)
            .filter(|(generation, _)| *generation == key.generation)
            .map(|(_, value)| value)
    }

    pub(crate) fn contains(&self, key: Key<T>) -> bool {
        self.get(key).is_some()
    }

    /// Removes the value `key` names; `None` for a stale key.
    pub(crate) fn remove(&mut self, key: Key<T>) -> Option<T> {
        if !self.contains(key) {
            return None;
        }
        Some(self.slab.remove(key.index).1)
    }

    /// The key of whatever lives at `index` now (a poll token's target).
    pub(crate) fn key_at(&self, index: usize) -> Option<Key<T>> {
        self.slab.get(index).map(|(generation, _)| Key {
            index,
            generation: *generation,
            _kind: PhantomData,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.slab.clear();
    }

    /// Gives back the capacity past the last live entry (every key stays
    /// valid: nothing moves). For an idle proxy, after load went away.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.slab.shrink_to_fit();
    }

    /// Slots allocated, live or vacant.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.slab.capacity()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (Key<T>, &T)> {
        self.slab.iter().map(|(index, (generation, value))| {
            let key = Key {
                index,
                generation: *generation,
                _kind: PhantomData,
            };
            (key, value)
        })
    }

    /// Every key, collected (to act on each while the arena changes).
    pub(crate) fn keys(&self) -> Vec<Key<T>> {
        self.iter().map(|(key, _)| key).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_key_never_reaches_a_reused_slot() {
        let mut arena = Arena::default();
        let first = arena.insert("first");
        assert_eq!(arena.get(first), Some(&"first"));
        assert_eq!(arena.remove(first), Some("first"));
        let second = arena.insert("second");
        assert_eq!(second.index(), first.index(), "the slot is reused");
        assert_ne!(first, second);
        assert_eq!(arena.get(first), None);
        assert_eq!(arena.get_mut(first), None);
        assert_eq!(arena.remove(first), None);
        assert_eq!(arena.get(second), Some(&"second"));
        assert_eq!(arena.key_at(second.index()), Some(second));
    }

    #[test]
    fn next_key_is_the_key_insert_returns() {
        let mut arena = Arena::default();
        arena.insert(1);
        let promised = arena.next_key();
        assert_eq!(arena.insert(2), promised);
        assert_eq!(arena.len(), 2);
        assert_eq!(arena.keys().len(), 2);
        arena.clear();
        assert!(arena.is_empty());
        assert_eq!(arena.key_at(promised.index()), None);
    }

    #[test]
    fn shrinking_keeps_every_live_key() {
        let mut arena = Arena::default();
        let keys: Vec<_> = (0..100).map(|n| arena.insert(n)).collect();
        for key in &keys[1..] {
            arena.remove(*key);
        }
        arena.shrink_to_fit();
        assert!(arena.capacity() < 100, "capacity {}", arena.capacity());
        assert_eq!(arena.get(keys[0]), Some(&0));
        assert_eq!(arena.get(keys[1]), None, "a removed key stays stale");
        let again = arena.insert(7);
        assert_ne!(again, keys[1]);
        assert_eq!(arena.get(again), Some(&7));
        arena.remove(keys[0]);
        arena.remove(again);
        arena.shrink_to_fit();
        assert_eq!(arena.capacity(), 0);
    }
}
