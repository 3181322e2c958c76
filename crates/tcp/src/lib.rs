//! TCP session ports (CONTRACT §6): a port of `TCP_PORT_START..=TCP_PORT_END` for each task
//! endpoint that asked for one, forwarded byte for byte to the task's own port.
//!
//! `allocator` hands the range's ports out in turn; `sessions` opens and closes the ports to
//! match the sessions wanted (one call with the whole set, as the route table is replaced);
//! `forward` serves one port: accept, connect to the task, copy both ways honouring
//! half-close, one log line per connection. Where the wanted set comes from (the ClearML
//! sync, the routes file) is not this crate's business.

mod allocator;
mod forward;
mod sessions;
#[cfg(target_os = "linux")]
mod splice;

pub use allocator::PortAllocator;
pub use forward::{AddressCheck, ForwardSettings, Target, TcpCounters};
pub use sessions::{Placement, PortChoice, TcpSessions, Wanted};
