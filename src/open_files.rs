//! The open-file limit. Every client connection, upstream connection and session port holds
//! a file descriptor, and the soft limit a process starts with is often 1024 while the hard
//! one allows far more: the gateway raises the soft limit to the hard one at start, and caps
//! client connections by default at half of it, leaving the other half for the connections
//! to tasks.

use std::io;

use gateway_proxy::DEFAULT_MAX_CONNECTIONS;

/// The highest `RLIMIT_NOFILE` Linux accepts when the hard limit is unlimited and
/// `/proc/sys/fs/nr_open` cannot be read (its default).
const NR_OPEN_DEFAULT: u64 = 1 << 20;

/// The soft limit the process can raise itself to: the hard limit, or the kernel's ceiling
/// when that is unlimited. The current soft limit if the limits cannot be read.
pub fn attainable() -> u64 {
    match current() {
        Ok(limits) => target(&limits),
        Err(_) => 1024,
    }
}

/// The default cap on open client connections for an open-file limit of `limit`.
pub fn default_max_connections(limit: u64) -> usize {
    let half = usize::try_from(limit / 2).unwrap_or(usize::MAX);
    half.clamp(1, DEFAULT_MAX_CONNECTIONS)
}

/// Raises the soft open-file limit to [`attainable`] and logs the outcome with the
/// connection cap in force; a failure is a warning, the gateway runs on with what it has.
pub fn raise_and_report(max_connections: usize) {
    let limit = match raise() {
        Ok((before, after)) => {
            let what = if before == after {
                "the open-file limit (RLIMIT_NOFILE) is already at its hard limit"
            } else {
                "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
            };
            tracing::info!(
                open_file_limit = after,
                raised_from = before,
                max_connections,
                "{what}"
            );
            after
        }
        Err((before, err)) => {
            tracing::warn!(
                open_file_limit = before,
                max_connections,
                error = %err,
                "could not raise the open-file limit (RLIMIT_NOFILE); running with it as it is"
            );
            before
        }
    };
    if u64::try_from(max_connections).unwrap_or(u64::MAX) > limit / 2 {
        tracing::warn!(
            open_file_limit = limit,
            max_connections,
            "ROUTER__HTTP__MAX_CONNECTIONS is more than half the open-file limit: descriptors \
             may run out before the cap is reached (new connections are then refused with 503)"
        );
    }
}

/// Sets the soft limit to the attainable one: `Ok((before, after))`, or the soft limit as
/// it stays and why it could not be raised.
fn raise() -> Result<(u64, u64), (u64, io::Error)> {
    let limits = current().map_err(|err| (0, err))?;
    let before = limits.rlim_cur;
    let wanted = target(&limits);
    if wanted <= before {
        return Ok((before, before));
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: limits.rlim_max,
    };
    // SAFETY: `setrlimit` reads the struct it is given, which lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err((before, io::Error::last_os_error()));
    }
    Ok((before, wanted))
}

fn current() -> io::Result<libc::rlimit> {
    let mut limits = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes into the struct it is given, which lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limits) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limits)
}

/// The hard limit; when it is unlimited, the kernel's ceiling (Linux refuses a soft limit
/// above `fs.nr_open`).
fn target(limits: &libc::rlimit) -> u64 {
    if limits.rlim_max != libc::RLIM_INFINITY {
        return limits.rlim_max;
    }
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(NR_OPEN_DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_is_half_the_limit_within_one_and_fifty_thousand() {
        assert_eq!(default_max_connections(1024), 512);
        assert_eq!(default_max_connections(20_000), 10_000);
        assert_eq!(default_max_connections(1 << 20), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(default_max_connections(1), 1);
        assert_eq!(default_max_connections(u64::MAX), DEFAULT_MAX_CONNECTIONS);
    }

    #[test]
    fn an_unlimited_hard_limit_is_read_as_the_kernels_ceiling() {
        let unlimited = libc::rlimit {
            rlim_cur: 1024,
            rlim_max: libc::RLIM_INFINITY,
        };
        let ceiling = target(&unlimited);
        assert!((1024..libc::RLIM_INFINITY).contains(&ceiling), "{ceiling}");
        let bounded = libc::rlimit {
            rlim_cur: 1024,
            rlim_max: 4096,
        };
        assert_eq!(target(&bounded), 4096);
    }
}
