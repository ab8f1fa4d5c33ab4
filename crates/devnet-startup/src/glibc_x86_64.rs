//! Linux, x86-64, glibc: the facts from `cpuid` and the environment, and
//! the exec.

use std::os::unix::process::CommandExt;

use crate::{Facts, REEXECED};

pub(crate) fn facts() -> Facts {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    let vendor = __cpuid(0);
    // "AuthenticAMD", in the order cpuid gives it: ebx, edx, ecx.
    let amd = [vendor.ebx, vendor.edx, vendor.ecx] == [0x6874_7541, 0x6974_6e65, 0x444d_4163];
    // Leaf 7: ERMS is ebx bit 9, FSRM edx bit 4 (what glibc checks).
    let rep_movsb = vendor.eax >= 7 && {
        let leaf7 = __cpuid_count(7, 0);
        leaf7.ebx & (1 << 9) != 0 || leaf7.edx & (1 << 4) != 0
    };
    Facts {
        amd,
        rep_movsb,
        tunables: std::env::var("GLIBC_TUNABLES").ok(),
        reexeced: std::env::var_os(REEXECED).is_some(),
    }
}

/// Returns only if the exec failed. Execs the binary's own path, so the
/// process keeps its name (`comm`: what ps, pgrep and the journal show; an
/// exec of `/proc/self/exe` would rename it "exe"), and `/proc/self/exe`
/// only if that path is gone (the package was upgraded under it).
pub(crate) fn exec_self(tunables: &str) -> std::io::Error {
    if let Ok(path) = std::env::current_exe() {
        // Only a failure returns; the fallback follows.
        let _ = crate::self_command(&path, std::env::args_os(), tunables).exec();
    }
    crate::self_command(std::path::Path::new("/proc/self/exe"), std::env::args_os(), tunables).exec()
}
