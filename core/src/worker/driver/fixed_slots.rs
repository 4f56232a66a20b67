//! Allocation of the ring's fixed-file (direct descriptor) table: a free list, which refuses
//! to take a slot back twice (two tasks sharing one pidfd slot would signal each other's
//! processes).

pub(super) struct FixedSlots {
    free: Vec<u32>,
    /// Whether each slot is on the free list.
    is_free: Vec<bool>,
}

impl FixedSlots {
    pub(super) fn new(size: u32) -> Self {
        // Reversed so that low indices go first: the kernel's table stays dense.
        FixedSlots {
            free: (0..size).rev().collect(),
            is_free: vec![true; size as usize],
        }
    }

    pub(super) fn available(&self) -> usize {
        self.free.len()
    }

    /// `n` slots, or `None` (and nothing taken) when fewer are free.
    pub(super) fn take(&mut self, n: usize) -> Option<Vec<u32>> {
        if self.free.len() < n {
            return None;
        }
        let at = self.free.len() - n;
        let taken = self.free.split_off(at);
        for &slot in &taken {
            self.is_free[slot as usize] = false;
        }
        Some(taken)
    }

    /// Returns `slot` to the free list; `false` (and nothing changes) if it is free already
    /// or not a slot of this table.
    pub(super) fn give_back(&mut self, slot: u32) -> bool {
        match self.is_free.get_mut(slot as usize) {
            Some(free @ false) => {
                *free = true;
                self.free.push(slot);
                true
            }
            _ => {
                tracing::error!(slot, "a fixed slot given back twice (or never taken)");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_all_or_nothing_and_reuses() {
        let mut slots = FixedSlots::new(3);
        let two = slots.take(2).unwrap();
        assert_eq!(two.len(), 2);
        assert!(slots.take(2).is_none());
        assert_eq!(slots.available(), 1);
        slots.give_back(two[0]);
        assert_eq!(slots.take(2).map(|v| v.len()), Some(2));
        assert_eq!(slots.available(), 0);
    }

    #[test]
    fn a_slot_cannot_be_given_back_twice() {
        let mut slots = FixedSlots::new(4);
        let taken = slots.take(1).unwrap();
        assert!(slots.give_back(taken[0]));
        assert!(
            !slots.give_back(taken[0]),
            "a double free would share the slot"
        );
        assert!(!slots.give_back(99));
        assert_eq!(slots.available(), 4);
        let all = slots.take(4).unwrap();
        let mut sorted = all.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 4, "{all:?}");
    }
}
