//! The process limits the relay needs. Each stream and UDP association
//! holds a socket, and a container starts with a soft open-files limit
//! (often 1024) far below its hard one, so the relay would refuse dials
//! with `EMFILE` long before its own caps matter.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises the soft open-files limit to the hard one (no privilege needed).
/// Returns the limit in force afterwards.
pub fn raise_open_files() -> std::io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= hard {
        return Ok(soft);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_reaches_the_hard_one() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        // Start below the hard limit, as a container does.
        setrlimit(Resource::RLIMIT_NOFILE, 256.min(hard), hard).expect("lowering the soft limit");
        assert_eq!(raise_open_files().expect("raised"), hard);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit"), (hard, hard));
        // Already there: nothing to do.
        assert_eq!(raise_open_files().expect("raised"), hard);
    }
}
