//! Handing a large poll's memory back to the system.
//!
//! A poll of thousands of tasks holds its listing for a moment (about 1 KiB a task) and
//! builds a second route table beside the one served. glibc keeps what is freed in its
//! arenas for reuse, so without a trim that peak stays resident between polls, unused.

/// Listings below this many tasks leave too little behind to be worth a trim.
const TRIM_FROM_TASKS: usize = 500;

/// After a poll that listed `tasks` tasks, returns the free pages of the heap to the system
/// (on a blocking thread: a trim walks the heap).
pub(crate) fn release_after_poll(tasks: usize) {
    if tasks >= TRIM_FROM_TASKS {
        tokio::task::spawn_blocking(trim);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks and releases glibc's own free lists; it takes glibc's
    // arena locks and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
