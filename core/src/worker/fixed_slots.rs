//! Allocation of the ring's fixed-file (direct descriptor) table: a free list.

pub(super) struct FixedSlots {
    free: Vec<u32>,
}

impl FixedSlots {
    pub(super) fn new(size: u32) -> Self {
        // Reversed so that low indices go first: the kernel's table stays dense.
        FixedSlots {
            free: (0..size).rev().collect(),
        }
    }

    #[cfg(test)]
    pub(super) fn available(&self) -> usize {
        self.free.len()
    }

    /// `n` slots, or `None` (and nothing taken) when fewer are free.
    pub(super) fn take(&mut self, n: usize) -> Option<Vec<u32>> {
        if self.free.len() < n {
            return None;
        }
        let at = self.free.len() - n;
        Some(self.free.split_off(at))
    }

    pub(super) fn give_back(&mut self, slot: u32) {
        self.free.push(slot);
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
}
