//! Ports from `TCP_PORT_START..=TCP_PORT_END`, handed out in turn. A released port goes to
//! the back of the line, so that a client still holding an old session's address does not
//! land in a new task's session at once.

use std::collections::{HashSet, VecDeque};
use std::ops::RangeInclusive;

/// The free ports of the range, oldest-released first.
#[derive(Debug)]
pub struct PortAllocator {
    range: RangeInclusive<u16>,
    free: VecDeque<u16>,
    taken: HashSet<u16>,
}

impl PortAllocator {
    /// Every port of `range` free.
    pub fn new(range: RangeInclusive<u16>) -> Self {
        Self {
            free: range.clone().collect(),
            taken: HashSet::new(),
            range,
        }
    }

    /// The next free port, if any.
    pub fn allocate(&mut self) -> Option<u16> {
        let port = self.free.pop_front()?;
        self.taken.insert(port);
        Some(port)
    }

    /// Takes `port` if it is in the range and free (for a session adopted after a restart).
    pub fn claim(&mut self, port: u16) -> bool {
        if !self.range.contains(&port) || self.taken.contains(&port) {
            return false;
        }
        self.free.retain(|p| *p != port);
        self.taken.insert(port);
        true
    }

    /// Gives `port` back; it is handed out again after every port freed before it.
    pub fn release(&mut self, port: u16) {
        if self.taken.remove(&port) {
            self.free.push_back(port);
        }
    }

    /// Ports free now.
    pub fn free_ports(&self) -> usize {
        self.free.len()
    }

    /// Ports in use.
    pub fn in_use(&self) -> usize {
        self.taken.len()
    }

    /// Whether `port` belongs to the range.
    pub fn covers(&self, port: u16) -> bool {
        self.range.contains(&port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_handed_out_in_turn_and_released_ones_wait_their_turn() {
        let mut ports = PortAllocator::new(10_000..=10_002);
        assert_eq!(ports.allocate(), Some(10_000));
        assert_eq!(ports.allocate(), Some(10_001));
        ports.release(10_000);
        assert_eq!(ports.allocate(), Some(10_002), "not the one just released");
        assert_eq!(ports.allocate(), Some(10_000));
        assert_eq!(ports.allocate(), None, "exhausted");
        assert_eq!(ports.in_use(), 3);
    }

    #[test]
    fn adopted_ports_are_claimed_once_and_only_in_range() {
        let mut ports = PortAllocator::new(10_000..=10_002);
        assert!(ports.claim(10_001));
        assert!(!ports.claim(10_001), "already taken");
        assert!(!ports.claim(9_999), "outside the range");
        assert_eq!(ports.allocate(), Some(10_000));
        assert_eq!(ports.allocate(), Some(10_002));
        ports.release(5);
        assert_eq!(
            ports.allocate(),
            None,
            "releasing a port never taken changes nothing"
        );
    }
}
