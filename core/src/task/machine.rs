//! PROVISIONAL: signatures only; the state-machine work replaces this file.
use super::*;

#[derive(Debug)]
pub struct TaskMachine {
    _config: TaskConfig,
}

#[allow(unused_variables)]
impl TaskMachine {
    pub fn new(config: TaskConfig, now: Instant) -> Self { todo!() }
    pub fn spawn_failed(config: TaskConfig, errno: i32, now: Instant) -> Self { todo!() }
    pub fn handle_process_exited(&mut self, status: ExitStatus, now: Instant) -> Result<(), Rejected> { todo!() }
    pub fn handle_data(&mut self, stream: StreamId, len: usize, more: bool, now: Instant) -> Result<(), Rejected> { todo!() }
    pub fn handle_eof(&mut self, stream: StreamId, now: Instant) -> Result<(), Rejected> { todo!() }
    pub fn handle_read_stopped(&mut self, stream: StreamId, now: Instant) -> Result<(), Rejected> { todo!() }
    pub fn handle_io_error(&mut self, stream: StreamId, errno: i32, now: Instant) -> Result<(), Rejected> { todo!() }
    pub fn handle_cancelled(&mut self, op: Op, now: Instant) -> Result<(), Rejected> { todo!() }
    pub fn handle_tree_empty(&mut self, now: Instant) -> Result<(), Rejected> { todo!() }
    pub fn handle_tree_occupied(&mut self, now: Instant) -> Result<(), Rejected> { todo!() }
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Rejected> { todo!() }
    pub fn handle_signal(&mut self, signal: i32, now: Instant) -> Result<(), Rejected> { todo!() }
    pub fn handle_terminate(&mut self, now: Instant) -> Result<(), Rejected> { todo!() }
    pub fn handle_kill(&mut self, now: Instant) -> Result<(), Rejected> { todo!() }
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> { todo!() }
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> { todo!() }
    pub fn is_released(&self) -> bool { todo!() }
    pub fn rejected(&self) -> u64 { todo!() }
}
