//! devnet's Linux packages: built by `installers/linux/build-packages.sh`
//! from the binaries under test, checked with dpkg's and rpm's own tools,
//! then installed, upgraded, removed and purged in clean Debian roots
//! (debootstrap, `tests/lab/debian-root.sh`).
//!
//! Two ways into a root, both inside the lab laptop's network namespace:
//! - **booted**: systemd-nspawn boots the root's own systemd as PID 1 (with
//!   D-Bus, journald, logind). The package's postinst starts devnetd with
//!   `systemctl`, so the unit's sandbox (capabilities, seccomp, ProtectSystem,
//!   the device policy), `Type=notify` readiness and `Restart=` are systemd's
//!   own, and a member of group devnet connects through it.
//! - **chroot**: a private mount namespace with /dev, /proc and /sys bound
//!   in, for what needs no init: file checks, and a devnetd started from its
//!   unit's command line by hand (as when systemd cannot restart it) whose
//!   crash the package's removal must clean up.
//!
//! Nothing is mounted in the host's namespace, so nothing outlives a test.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use devnet_lab::harness::{self, Lab, OnFailure, ReadySocket, Res, ServiceUnit, text};

const LAB: &str = "pkg";
/// The person installing (`sudo apt install ./devnet.deb`) and then using devnet.
const ALICE: &str = "alice";
const ALICE_UID: u32 = 2201;
/// Where the tests put the packages inside a root.
const PACKAGES_IN_ROOT: &str = "/opt/devnet-test-packages";

fn main() {
    harness::run(
        "packages",
        setup,
        &[
            ("packages_01_deb_and_rpm_hold_the_same_files_and_scripts", contents),
            ("packages_02_dependencies_cover_every_linked_library", dependencies),
            ("packages_03_install_in_a_clean_debian_root", install),
            ("packages_04_the_unit_verifies_and_its_exposure_is_scored", unit_checks),
            ("packages_05_systemd_starts_devnetd_and_a_member_connects", member_connects),
            ("packages_06_a_crash_is_restarted_and_undone_then_purge_leaves_no_file", crash_restart_purge),
            ("packages_07_removal_undoes_what_a_devnetd_without_systemd_left", purge_after_crash),
            ("packages_08_upgrade_from_the_previous_build_restarts_devnetd", upgrade),
            ("packages_09_rpm_scripts_install_upgrade_and_erase", rpm_lifecycle),
        ],
        OnFailure::Keep,
    )
}

fn setup() -> Res<Lab> {
    Lab::up(LAB)
}

// ---------------------------------------------------------------------------
// The packages, built once for every trial

/// One build's four packages.
struct Build {
    devnet_deb: PathBuf,
    tray_deb: PathBuf,
    devnet_rpm: PathBuf,
    tray_rpm: PathBuf,
}

struct Builds {
    version: String,
    /// The build before this one (release 0): what an upgrade starts from.
    previous: Build,
    current: Build,
}

fn builds(lab: &Lab) -> Res<&'static Builds> {
    static BUILDS: OnceLock<Result<Builds, String>> = OnceLock::new();
    BUILDS.get_or_init(|| build_all(lab)).as_ref().map_err(Clone::clone)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn build_all(lab: &Lab) -> Res<Builds> {
    let version = env!("CARGO_PKG_VERSION").to_owned();
    let build = |release: &str| -> Res<Build> {
        let out = lab.dir.join(format!("packages-{release}"));
        let _ = std::fs::remove_dir_all(&out);
        let script = repo().join("installers/linux/build-packages.sh");
        run_ok(Command::new("bash").arg(script).arg(&lab.bin).arg(&out).arg(&version).arg(release))?;
        let find = |prefix: &str, ext: &str| -> Res<PathBuf> {
            let names = list_dir(&out)?;
            let found: Vec<&String> = names.iter().filter(|n| n.starts_with(prefix) && n.ends_with(ext)).collect();
            match found.as_slice() {
                [one] => Ok(out.join(one)),
                _ => Err(format!("expected one {prefix}*{ext} in {}, found {names:?}", out.display())),
            }
        };
        Ok(Build {
            devnet_deb: find(&format!("devnet_{version}-{release}_"), ".deb")?,
            tray_deb: find(&format!("devnet-tray_{version}-{release}_"), ".deb")?,
            devnet_rpm: find(&format!("devnet-{version}-{release}."), ".rpm")?,
            tray_rpm: find(&format!("devnet-tray-{version}-{release}."), ".rpm")?,
        })
    };
    Ok(Builds { previous: build("0")?, current: build("1")?, version })
}

fn list_dir(dir: &Path) -> Res<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

fn run_ok(cmd: &mut Command) -> Res<String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed ({}): {}", out.status, text(&out)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What each package installs, mode and path: the whole list, so a file
/// added or lost shows here.
fn expected_files(pkg: &str) -> BTreeSet<String> {
    let list: &[(&str, &str)] = match pkg {
        "devnet" => &[
            ("0755", "/usr/bin/devnet"),
            ("0755", "/usr/bin/devnetd"),
            ("0644", "/usr/lib/systemd/system/devnetd.service"),
            ("0644", "/usr/lib/sysusers.d/devnet.conf"),
            ("0644", "/usr/lib/tmpfiles.d/devnet.conf"),
            ("0644", "/usr/share/bash-completion/completions/devnet"),
            ("0644", "/usr/share/zsh/vendor-completions/_devnet"),
            ("0644", "/usr/share/fish/vendor_completions.d/devnet.fish"),
            ("0644", "/usr/share/doc/devnet/copyright"),
        ],
        _ => &[
            ("0755", "/usr/bin/devnet-tray"),
            ("0644", "/usr/share/applications/dev.devnet.tray.desktop"),
            ("0644", "/usr/share/icons/hicolor/16x16/apps/devnet.png"),
            ("0644", "/usr/share/icons/hicolor/22x22/apps/devnet.png"),
            ("0644", "/usr/share/icons/hicolor/24x24/apps/devnet.png"),
            ("0644", "/usr/share/icons/hicolor/32x32/apps/devnet.png"),
            ("0644", "/usr/share/icons/hicolor/48x48/apps/devnet.png"),
            ("0644", "/usr/share/icons/hicolor/64x64/apps/devnet.png"),
            ("0644", "/usr/share/icons/hicolor/128x128/apps/devnet.png"),
            ("0644", "/usr/share/icons/hicolor/256x256/apps/devnet.png"),
            ("0644", "/usr/share/doc/devnet-tray/copyright"),
        ],
    };
    list.iter().map(|(mode, path)| format!("{mode} root root {path}")).collect()
}

/// `dpkg-deb --contents` as "mode owner group path" for regular files.
fn deb_files(deb: &Path) -> Res<BTreeSet<String>> {
    let listing = run_ok(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    let mut files = BTreeSet::new();
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [perm, owner, _size, _date, _time, path, ..] = f.as_slice() else { continue };
        if !perm.starts_with('-') {
            continue;
        }
        let (user, group) = owner.split_once('/').unwrap_or((owner, ""));
        files.insert(format!("{} {user} {group} {}", mode_of(perm)?, path.trim_start_matches('.')));
    }
    Ok(files)
}

/// `-rwxr-xr-x` → `0755`.
fn mode_of(perm: &str) -> Res<String> {
    let bits: Vec<char> = perm.chars().skip(1).collect();
    if bits.len() != 9 {
        return Err(format!("odd mode {perm}"));
    }
    let mut mode = 0u32;
    for (i, c) in bits.iter().enumerate() {
        if *c != '-' {
            mode |= 1 << (8 - i);
        }
    }
    Ok(format!("{mode:04o}"))
}

/// `rpm -qp --dump` as "mode owner group path" for regular files.
fn rpm_files(rpm: &Path) -> Res<BTreeSet<String>> {
    let dump = run_ok(Command::new("rpm").args(["-qp", "--dump"]).arg(rpm))?;
    let mut files = BTreeSet::new();
    for line in dump.lines() {
        // path size mtime digest mode owner group isconfig isdoc rdev symlink
        let f: Vec<&str> = line.split_whitespace().collect();
        let [path, _size, _mtime, _digest, mode, owner, group, ..] = f.as_slice() else { continue };
        let mode = u32::from_str_radix(mode, 8).map_err(|e| format!("{line}: {e}"))?;
        if mode & 0o170000 != 0o100000 {
            continue;
        }
        files.insert(format!("{:04o} {owner} {group} {path}", mode & 0o7777));
    }
    Ok(files)
}

fn contents(lab: &Lab) -> Res {
    let b = builds(lab)?;
    for (pkg, deb, rpm) in [
        ("devnet", &b.current.devnet_deb, &b.current.devnet_rpm),
        ("devnet-tray", &b.current.tray_deb, &b.current.tray_rpm),
    ] {
        let want = expected_files(pkg);
        let in_deb = deb_files(deb)?;
        if in_deb != want {
            return Err(format!("{pkg}.deb holds {in_deb:#?}\nnot {want:#?}"));
        }
        let in_rpm = rpm_files(rpm)?;
        if in_rpm != want {
            return Err(format!("{pkg}.rpm holds {in_rpm:#?}\nnot {want:#?}"));
        }
        // rpm's own check of the package's digests.
        let checked = run_ok(Command::new("rpm").args(["-K", "--nosignature"]).arg(rpm))?;
        if !checked.contains("digests OK") {
            return Err(format!("rpm -K {}: {checked}", rpm.display()));
        }
        let fields =
            run_ok(Command::new("dpkg-deb").arg("--field").arg(deb).args(["Package", "Version", "Architecture"]))?;
        let arch = run_ok(Command::new("dpkg").arg("--print-architecture"))?;
        let want_fields = format!("Package: {pkg}\nVersion: {}-1\nArchitecture: {}\n", b.version, arch.trim());
        if fields != want_fields {
            return Err(format!("{pkg}.deb fields:\n{fields}\nnot\n{want_fields}"));
        }
    }
    // The maintainer scripts: the same files in both formats, at the places
    // each format runs them.
    let scripts = repo().join("installers/linux/scripts");
    let control = lab.dir.join("deb-control");
    let _ = std::fs::remove_dir_all(&control);
    run_ok(Command::new("dpkg-deb").arg("--control").arg(&b.current.devnet_deb).arg(&control))?;
    let rpm_scripts = run_ok(Command::new("rpm").args(["-qp", "--scripts"]).arg(&b.current.devnet_rpm))?;
    for (name, rpm_name) in [("postinst", "postinstall"), ("prerm", "preuninstall"), ("postrm", "postuninstall")] {
        let ours = read(&scripts.join(name))?;
        let in_deb = read(&control.join(name))?;
        if in_deb != ours {
            return Err(format!("the .deb's {name} differs from installers/linux/scripts/{name}"));
        }
        let mode = std::fs::metadata(control.join(name)).map_err(|e| e.to_string())?.permissions().mode();
        if mode & 0o111 == 0 {
            return Err(format!("the .deb's {name} is not executable ({mode:o})"));
        }
        let section = format!("{rpm_name} scriptlet (using /bin/sh):\n");
        let body = rpm_scripts.split(&section).nth(1).ok_or(format!("the .rpm has no {rpm_name}: {rpm_scripts}"))?;
        // rpm strips the script's final newline.
        if !body.starts_with(ours.trim_end()) {
            return Err(format!("the .rpm's {rpm_name} differs from installers/linux/scripts/{name}:\n{body}"));
        }
    }
    // The tray app needs the same version of devnet (the IPC they speak).
    let depends = run_ok(Command::new("dpkg-deb").arg("--field").arg(&b.current.tray_deb).arg("Depends"))?;
    if !depends.contains(&format!("devnet (= {}-1)", b.version)) {
        return Err(format!("devnet-tray's Depends does not pin devnet's version: {depends}"));
    }
    let requires = run_ok(Command::new("rpm").args(["-qp", "--requires"]).arg(&b.current.tray_rpm))?;
    if !requires.lines().any(|l| l.trim() == format!("devnet = {}-1", b.version)) {
        return Err(format!("devnet-tray.rpm does not require devnet = {}-1:\n{requires}", b.version));
    }
    Ok(())
}

fn read(path: &Path) -> Res<String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The libraries each binary links, as dpkg-shlibdeps names their packages,
/// must all be in the package's Depends: a missing one installs fine and
/// fails at the first start.
fn dependencies(lab: &Lab) -> Res {
    let b = builds(lab)?;
    let work = lab.dir.join("shlibdeps");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("debian")).map_err(|e| e.to_string())?;
    std::fs::write(work.join("debian/control"), "Source: devnet\n\nPackage: devnet\nArchitecture: any\n")
        .map_err(|e| e.to_string())?;
    for (deb, binaries) in
        [(&b.current.devnet_deb, &["devnet", "devnetd"][..]), (&b.current.tray_deb, &["devnet-tray"][..])]
    {
        let depends = run_ok(Command::new("dpkg-deb").arg("--field").arg(deb).arg("Depends"))?;
        let declared: BTreeSet<String> =
            depends.split(',').map(|d| d.split_whitespace().next().unwrap_or_default().to_owned()).collect();
        let mut cmd = Command::new("dpkg-shlibdeps");
        cmd.current_dir(&work).arg("-O");
        for bin in binaries {
            cmd.arg(lab.bin.join(bin));
        }
        let out = run_ok(&mut cmd)?;
        let needed = out.trim().strip_prefix("shlibs:Depends=").ok_or(format!("dpkg-shlibdeps said: {out}"))?;
        for dep in needed.split(',') {
            let name = dep.split_whitespace().next().unwrap_or_default();
            if !declared.contains(name) {
                return Err(format!("{binaries:?} need {dep} (dpkg-shlibdeps), missing from Depends: {depends}"));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Clean Debian roots

/// A fresh Debian root, unpacked from the cached debootstrap tarball, with
/// a desktop user and the laptop's resolv.conf.
struct Root {
    path: PathBuf,
    lab_ns: String,
}

impl Root {
    fn fresh(lab: &Lab, name: &str) -> Res<Root> {
        let tarball = run_ok(Command::new("bash").arg(repo().join("tests/lab/debian-root.sh")))?;
        let path = lab.dir.join("roots").join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        run_ok(Command::new("tar").arg("-C").arg(&path).arg("--numeric-owner").arg("-xf").arg(tarball.trim()))?;
        let root = Root { path, lab_ns: format!("{}-laptop", lab.name) };
        root.ok(&["useradd", "--create-home", "--uid", &ALICE_UID.to_string(), "--user-group", ALICE], &[])?;
        let resolv = read(Path::new(&format!("/etc/netns/{}/resolv.conf", root.lab_ns)))?;
        // A file of its own, as on a laptop (debootstrap copied the host's).
        let conf = root.path.join("etc/resolv.conf");
        let _ = std::fs::remove_file(&conf);
        std::fs::write(&conf, resolv).map_err(|e| e.to_string())?;
        Ok(root)
    }

    /// The lab laptop's network and a private mount namespace with the
    /// root's /dev, /proc and /sys mounted; then `cmd`, run from the host
    /// with the root's path as `$r`.
    fn mounted(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.lab_ns, "unshare", "--mount", "--propagation", "private", "sh", "-c"]);
        c.arg(
            r#"r=$1; shift
mount --rbind /dev "$r/dev" && mount -t proc proc "$r/proc" && mount --rbind /sys "$r/sys" || exit 111
exec "$@""#,
        );
        c.arg("sh").arg(&self.path);
        c
    }

    /// Copies a package into the root (not /tmp: a booted container mounts
    /// a tmpfs there); its path inside.
    fn put(&self, file: &Path) -> Res<String> {
        let name = file.file_name().ok_or("no file name")?.to_string_lossy().into_owned();
        let dir = self.path.join(&PACKAGES_IN_ROOT[1..]);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::copy(file, dir.join(&name)).map_err(|e| e.to_string())?;
        Ok(format!("{PACKAGES_IN_ROOT}/{name}"))
    }

    /// Whether devnetd.service is enabled: its link in multi-user.target's
    /// wants, pointing (inside the root) at the installed unit.
    fn enabled(&self) -> Res<bool> {
        let wants = self.path.join("etc/systemd/system/multi-user.target.wants/devnetd.service");
        let Ok(link) = std::fs::read_link(&wants) else { return Ok(false) };
        let target = self.path.join(link.strip_prefix("/").map_err(|e| e.to_string())?);
        let installed = self.path.join("usr/lib/systemd/system/devnetd.service");
        Ok(std::fs::canonicalize(&target).ok() == std::fs::canonicalize(&installed).ok() && installed.exists())
    }

    /// Every path in the root but the kernel's file systems, with its type,
    /// mode and owner, and a digest of each regular file's contents.
    fn inventory(&self) -> Res<BTreeMap<String, String>> {
        fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Res {
            for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?.flatten() {
                let path = entry.path();
                let rel = format!("/{}", path.strip_prefix(base).map_err(|e| e.to_string())?.display());
                if ["/proc", "/sys", "/dev"].contains(&rel.as_str()) {
                    continue;
                }
                let meta = std::fs::symlink_metadata(&path).map_err(|e| e.to_string())?;
                let kind = if meta.is_dir() {
                    "dir".to_owned()
                } else if meta.file_type().is_symlink() {
                    format!("link {}", std::fs::read_link(&path).map_err(|e| e.to_string())?.display())
                } else if meta.is_file() {
                    format!("file {}", digest(&path)?)
                } else {
                    "special".to_owned()
                };
                out.insert(rel, format!("{kind} {:o} {}:{}", meta.mode() & 0o7777, meta.uid(), meta.gid()));
                if meta.is_dir() {
                    walk(base, &path, out)?;
                }
            }
            Ok(())
        }
        let mut out = BTreeMap::new();
        walk(&self.path, &self.path, &mut out)?;
        Ok(out)
    }
}

/// Where commands run inside a root: chrooted into it, or in the container
/// that booted it.
trait Inside {
    /// The command that enters it, before the program's own argv.
    fn enter(&self) -> Command;
    /// "the root" or "the container", for errors.
    fn place(&self) -> &'static str;

    /// `cmd` inside, with a clean environment plus `env`.
    fn command(&self, cmd: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = self.enter();
        c.args(["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]);
        for (k, v) in env {
            c.arg(format!("{k}={v}"));
        }
        c.args(cmd);
        c
    }

    fn run(&self, cmd: &[&str], env: &[(&str, &str)]) -> Res<Output> {
        self.command(cmd, env).output().map_err(|e| format!("{cmd:?} in {}: {e}", self.place()))
    }

    fn ok(&self, cmd: &[&str], env: &[(&str, &str)]) -> Res<String> {
        let out = self.run(cmd, env)?;
        if !out.status.success() {
            return Err(format!("{cmd:?} in {} failed ({}): {}", self.place(), out.status, text(&out)));
        }
        Ok(text(&out))
    }

    /// `dpkg --install` as `sudo` runs it for alice; what it said.
    fn dpkg_install(&self, root: &Root, debs: &[&Path]) -> Res<String> {
        let mut cmd = vec!["dpkg".to_owned(), "--install".to_owned()];
        for deb in debs {
            cmd.push(root.put(deb)?);
        }
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        self.ok(&cmd, &[("SUDO_USER", ALICE), ("DEBIAN_FRONTEND", "noninteractive")])
    }
}

impl Inside for Root {
    /// [`mounted`](Root::mounted), then chroot.
    fn enter(&self) -> Command {
        let mut c = self.mounted();
        c.arg("chroot").arg(&self.path);
        c
    }

    fn place(&self) -> &'static str {
        "the root"
    }
}

impl Inside for Booted {
    /// All the container's namespaces and its root directory.
    fn enter(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["--target", &self.leader.to_string(), "--all", "--root", "--wd", "--"]);
        c
    }

    fn place(&self) -> &'static str {
        "the container"
    }
}

/// Each root is 800 MB unpacked: gone with its trial (a booted container,
/// declared after its root, is powered off before this runs).
impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn digest(path: &Path) -> Res<String> {
    use std::hash::Hasher;
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(&bytes);
    Ok(format!("{:016x}/{}", h.finish(), bytes.len()))
}

/// What the package system itself keeps about what it did: its database, its
/// logs, and the shadow tools' backup copies. Everything else a purge must
/// put back as it was.
fn bookkeeping(path: &str) -> bool {
    [
        "/var/lib/dpkg/",
        "/var/log/",
        "/var/cache/debconf/",
        "/var/lib/rpm/",
        "/usr/lib/sysimage/rpm",
        "/tmp/",
        "/root/.rpmdb",
    ]
    .iter()
    .any(|p| path.starts_with(p))
        || ["/etc/group-", "/etc/gshadow-", "/etc/passwd-", "/etc/shadow-", "/var/lib/rpm", "/usr/lib/sysimage"]
            .contains(&path)
}

fn changes(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, what) in after {
        if bookkeeping(path) {
            continue;
        }
        match before.get(path) {
            None => out.push(format!("left: {path} ({what})")),
            Some(was) if was != what => out.push(format!("changed: {path} ({was} -> {what})")),
            _ => {}
        }
    }
    for path in before.keys() {
        if !after.contains_key(path) && !bookkeeping(path) {
            out.push(format!("removed: {path}"));
        }
    }
    out
}

fn group_line(root: &Root) -> Res<Option<String>> {
    Ok(read(&root.path.join("etc/group"))?.lines().find(|l| l.starts_with("devnet:")).map(str::to_owned))
}

// ---------------------------------------------------------------------------
// Trials in roots

fn install(lab: &Lab) -> Res {
    let b = builds(lab)?;
    let root = Root::fresh(lab, "install")?;
    let said = root.dpkg_install(&root, &[&b.current.devnet_deb, &b.current.tray_deb])?;
    // The person installing joins the group, and is told what to do next.
    let line = group_line(&root)?.ok_or("no group devnet after install")?;
    if !line.split(':').nth(3).is_some_and(|m| m.split(',').any(|u| u == ALICE)) {
        return Err(format!("alice is not in group devnet: {line}"));
    }
    if !said.contains("added alice to group devnet; log out and back in") {
        return Err(format!("the install did not tell alice to log in again:\n{said}"));
    }
    // Installed, listed by dpkg as the package's, with the right modes.
    let listed = root.ok(&["dpkg", "--listfiles", "devnet", "devnet-tray"], &[])?;
    for file in expected_files("devnet").iter().chain(&expected_files("devnet-tray")) {
        let (mode, path) = (&file[..4], file.rsplit(' ').next().unwrap_or_default());
        if !listed.lines().any(|l| l == path) {
            return Err(format!("dpkg does not list {path}:\n{listed}"));
        }
        let meta = std::fs::metadata(root.path.join(&path[1..])).map_err(|e| format!("{path}: {e}"))?;
        if format!("{:04o}", meta.mode() & 0o7777) != mode {
            return Err(format!("{path} has mode {:o}, not {mode}", meta.mode() & 0o7777));
        }
    }
    // devnetd's state directory, root only; enabled at boot.
    let state = std::fs::metadata(root.path.join("var/lib/devnet")).map_err(|e| format!("/var/lib/devnet: {e}"))?;
    if state.mode() & 0o7777 != 0o700 || state.uid() != 0 {
        return Err(format!("/var/lib/devnet is {:o} uid {}", state.mode() & 0o7777, state.uid()));
    }
    if !root.enabled()? {
        return Err("devnetd is not enabled after the install".into());
    }
    // Every library the tray app needs is in the root after its Depends.
    let ldd = root.ok(&["ldd", "/usr/bin/devnet-tray"], &[])?;
    if ldd.contains("not found") {
        return Err(format!("devnet-tray's libraries are missing:\n{ldd}"));
    }
    let version = root.ok(&["devnet", "--version"], &[])?;
    if version.trim() != format!("devnet {}", b.version) {
        return Err(format!("devnet --version: {version}"));
    }
    // The launcher entry and its icon, as desktops read them.
    let desktop = read(&root.path.join("usr/share/applications/dev.devnet.tray.desktop"))?;
    if !desktop.contains("\nExec=devnet-tray --window\n") || !desktop.contains("\nIcon=devnet\n") {
        return Err(format!("the launcher entry: {desktop}"));
    }
    let validate = run_ok(
        Command::new("desktop-file-validate").arg(root.path.join("usr/share/applications/dev.devnet.tray.desktop")),
    )?;
    if !validate.trim().is_empty() {
        return Err(format!("desktop-file-validate: {validate}"));
    }
    // Start at login is the user's choice: nothing in the system's autostart.
    if root
        .path
        .join("etc/xdg/autostart")
        .read_dir()
        .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().contains("devnet"))))
    {
        return Err("the package turned on start at login for everyone".into());
    }
    Ok(())
}

fn unit_checks(lab: &Lab) -> Res {
    let b = builds(lab)?;
    let root = Root::fresh(lab, "unit")?;
    root.dpkg_install(&root, &[&b.current.devnet_deb])?;
    // systemd's own checks, on the unit as installed (its binary, its
    // groups and users, in that root).
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path.display()))
        .arg("/usr/lib/systemd/system/devnetd.service")
        .output()
        .map_err(|e| e.to_string())?;
    let said = text(&out);
    if !out.status.success() || said.lines().any(|l| l.contains("devnetd.service")) {
        return Err(format!("systemd-analyze verify ({}):\n{said}", out.status));
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--root={}", root.path.display()))
        .arg("/usr/lib/systemd/system/devnetd.service")
        .output()
        .map_err(|e| e.to_string())?;
    let report = text(&out);
    let score: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for devnetd.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or(format!("no exposure level in:\n{report}"))?;
    let artifacts = artifacts();
    std::fs::write(artifacts.join("devnetd-security.txt"), &report).map_err(|e| e.to_string())?;
    println!("systemd-analyze security: devnetd.service exposure {score} (0 safest, 10 unsafe)");
    // Root with CAP_NET_ADMIN and the network is what devnetd is for; all
    // the rest is shut (2.7 when measured; 6.7 before the hardening).
    if score > 3.0 {
        return Err(format!("devnetd.service's exposure is {score}, above 3.0:\n{report}"));
    }
    Ok(())
}

fn artifacts() -> PathBuf {
    let dir = std::env::var_os("DEVNET_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/test-artifacts"))
        .join("packages");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// The root booted by systemd-nspawn: its own systemd as PID 1, in the lab
/// laptop's network namespace, with CAP_NET_ADMIN (the container's bounding
/// set is nspawn's default plus that).
struct Booted {
    nspawn: Child,
    /// The container's PID 1, as the host sees it.
    leader: u32,
    machine: String,
}

impl Booted {
    fn boot(lab: &Lab, root: &Root, name: &str) -> Res<Booted> {
        let machine = format!("{}-{name}", lab.name);
        let log = std::fs::File::create(lab.dir.join(format!("nspawn-{name}.log"))).map_err(|e| e.to_string())?;
        let nspawn = Command::new("systemd-nspawn")
            .args(["--quiet", "--directory"])
            .arg(&root.path)
            .args(["--machine", &machine, "--register=no", "--keep-unit", "--boot", "--console=passive"])
            .arg(format!("--network-namespace-path=/run/netns/{}", root.lab_ns))
            .args(["--capability=CAP_NET_ADMIN", "--resolv-conf=off", "--timezone=off", "--link-journal=no"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("systemd-nspawn: {e}"))?;
        let mut booted = Booted { leader: 0, machine, nspawn };
        let start = Instant::now();
        while booted.leader == 0 {
            if start.elapsed() > Duration::from_secs(20) {
                return Err(format!("systemd-nspawn started no init:\n{}", booted.log(lab)));
            }
            if let Ok(Some(status)) = booted.nspawn.try_wait() {
                return Err(format!("systemd-nspawn exited with {status}:\n{}", booted.log(lab)));
            }
            let pid = booted.nspawn.id();
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
            for child in children.split_whitespace() {
                if std::fs::read_to_string(format!("/proc/{child}/comm")).is_ok_and(|c| c.trim() == "systemd") {
                    booted.leader = child.parse().map_err(|e| format!("{child}: {e}"))?;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Booted: every unit started (or failed, which the trials check).
        let start = Instant::now();
        loop {
            let out = booted.run(&["systemctl", "is-system-running", "--wait"], &[])?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                return Ok(booted);
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!("the container did not finish booting: {}", text(&out)));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self, lab: &Lab) -> String {
        let name = self.machine.trim_start_matches(&format!("{}-", lab.name)).to_owned();
        std::fs::read_to_string(lab.dir.join(format!("nspawn-{name}.log"))).unwrap_or_default()
    }

    fn as_alice(&self, cmd: &[&str]) -> Res<Output> {
        let mut all =
            vec!["setpriv", "--reuid", ALICE, "--regid", ALICE, "--init-groups", "--", "env", "HOME=/home/alice"];
        all.extend_from_slice(cmd);
        self.run(&all, &[])
    }

    /// `systemctl show devnetd -p <property> --value`.
    fn devnetd(&self, property: &str) -> Res<String> {
        Ok(self
            .ok(&["systemctl", "show", "devnetd.service", "--property", property, "--value"], &[])?
            .trim()
            .to_owned())
    }

    /// devnetd's pid, in the container's numbering.
    fn devnetd_pid(&self) -> Res<u32> {
        let pid: u32 = self.devnetd("MainPID")?.parse().map_err(|e| format!("MainPID: {e}"))?;
        if pid == 0 {
            return Err(format!("devnetd is not running: {}", self.journal()));
        }
        Ok(pid)
    }

    fn journal(&self) -> String {
        self.run(&["journalctl", "--unit", "devnetd.service", "--no-pager", "--output", "cat"], &[])
            .map(|o| text(&o))
            .unwrap_or_else(|e| e)
    }

    /// Waits until devnetd is active with a main pid other than `not`.
    fn wait_devnetd(&self, not: u32, within: Duration) -> Res<u32> {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.devnetd("ActiveState")? == "active"
                && let Ok(pid) = self.devnetd_pid()
                && pid != not
            {
                return Ok(pid);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("devnetd was not active again within {within:?}:\n{}", self.journal()))
    }

    /// Powers the container off as `machinectl poweroff` does.
    fn poweroff(&mut self) {
        if self.leader != 0 {
            let _ = nix_kill(self.leader, "RTMIN+4");
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if matches!(self.nspawn.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        // nspawn's mount-propagation folder for the machine, which it
        // cannot remove where /run is not a tmpfs.
        let _ = std::fs::remove_dir_all(format!("/run/systemd/nspawn/propagate/{}", self.machine));
        self.leader = 0;
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        self.poweroff();
    }
}

/// devnetd in the root, from its unit's ExecStart with the unit's
/// capability bounding set, no_new_privs and groups; readiness as systemd
/// reads it (`READY=1` on `$NOTIFY_SOCKET`).
struct RootDaemon {
    child: Child,
}

impl RootDaemon {
    fn start(root: &Root) -> Res<RootDaemon> {
        let unit = ServiceUnit::read(&root.path.join("usr/lib/systemd/system/devnetd.service"))?;
        let setpriv = unit.setpriv_args_with(|name| Ok(name.to_owned()))?;
        let ready = ReadySocket::bind(&root.path.join("run/devnetd-notify.sock"))?;
        let mut cmd = vec!["setpriv"];
        cmd.extend(setpriv.iter().map(String::as_str));
        cmd.push("--");
        cmd.extend(unit.exec_start.iter().map(String::as_str));
        let log = root.path.join("devnetd.log");
        let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = root
            .command(&cmd, &[("NOTIFY_SOCKET", "/run/devnetd-notify.sock")])
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("starting devnetd: {e}"))?;
        // Dropped on failure, which kills it.
        let mut daemon = RootDaemon { child };
        ready.wait(|| daemon.child.try_wait().ok().flatten(), || std::fs::read_to_string(&log).unwrap_or_default())?;
        Ok(daemon)
    }

    /// SIGKILL: a crash that leaves the journal.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RootDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn nix_kill(pid: u32, signal: &str) -> Res {
    run_ok(Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string())).map(drop)
}

/// Gives alice the lab's profile, token and relay CA in her home.
fn alice_profile(lab: &Lab, root: &Root) -> Res<String> {
    let home = root.path.join("home/alice");
    let profile = read(&lab.dir.join("profile.toml"))?
        .replace(&format!("{}/token", lab.dir.display()), "/home/alice/token")
        .replace(&format!("{}/relay-tls/ca.pem", lab.dir.display()), "/home/alice/relay-ca.pem");
    for (name, contents) in [
        ("profile.toml", profile),
        ("token", read(&lab.dir.join("token"))?),
        ("relay-ca.pem", read(&lab.dir.join("relay-tls/ca.pem"))?),
    ] {
        let path = home.join(name);
        std::fs::write(&path, contents).map_err(|e| e.to_string())?;
        std::os::unix::fs::chown(&path, Some(ALICE_UID), Some(ALICE_UID)).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    }
    Ok("/home/alice/profile.toml".into())
}

/// alice's `devnet connect`, left running (`command` makes a command in the
/// root or container); waits until her `devnet status` says "connected".
fn alice_connects(command: impl Fn(&[&str]) -> Command, root: &Root, profile: &str) -> Res<Child> {
    let log_path = root.path.join("connect.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let as_alice = ["setpriv", "--reuid", ALICE, "--regid", ALICE, "--init-groups", "--", "env", "HOME=/home/alice"];
    let mut connect = as_alice.to_vec();
    connect.extend(["devnet", "connect", "--profile", profile]);
    let mut child = command(&connect)
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut status = as_alice.to_vec();
    status.extend(["devnet", "status", "--json"]);
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(exit)) = child.try_wait() {
            return Err(format!("devnet connect exited with {exit}:\n{}", read(&log_path)?));
        }
        let out = command(&status).output().map_err(|e| e.to_string())?;
        last = text(&out);
        if out.status.code() == Some(0)
            && serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|s| s["state"] == "connected")
        {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    Err(format!("alice's session did not connect within 20 s; last status: {last}\n{}", read(&log_path)?))
}

/// As alice (`as_alice` runs a command as her): the service's name resolves
/// through the system resolver (the root's resolv.conf, which devnetd
/// pointed at its stub) and answers over TCP.
fn alice_reaches_the_cluster(as_alice: impl Fn(&[&str]) -> Res<Output>) -> Res {
    let out = as_alice(&["getent", "ahosts", "web.demo.svc.cluster.local"])?;
    let addresses: BTreeSet<&str> = std::str::from_utf8(&out.stdout)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if addresses != BTreeSet::from(["10.96.0.20", "fd00:96::20"]) {
        return Err(format!("getent ahosts web.demo.svc.cluster.local: {}", text(&out)));
    }
    let out = as_alice(&[
        "bash",
        "-c",
        "exec 3<>/dev/tcp/web.demo.svc.cluster.local/80 && printf 'GET / HTTP/1.0\\r\\nHost: web\\r\\n\\r\\n' >&3 && timeout 5 head -c 64 <&3",
    ])?;
    if !text(&out).starts_with("HTTP/1") {
        return Err(format!("HTTP to web.demo.svc.cluster.local: {}", text(&out)));
    }
    Ok(())
}

fn member_connects(lab: &Lab) -> Res {
    let b = builds(lab)?;
    let root = Root::fresh(lab, "connect")?;
    let mut booted = Booted::boot(lab, &root, "connect")?;
    let said = booted.dpkg_install(&root, &[&b.current.devnet_deb])?;
    // postinst started it, and systemd waited for READY=1.
    let (state, kind, enabled) =
        (booted.devnetd("ActiveState")?, booted.devnetd("Type")?, booted.devnetd("UnitFileState")?);
    if (state.as_str(), kind.as_str(), enabled.as_str()) != ("active", "notify", "enabled") {
        return Err(format!(
            "devnetd is {state}, Type={kind}, {enabled} after the install:\n{said}\n{}",
            booted.journal()
        ));
    }
    // The sandbox is systemd's, as the unit says: two capabilities,
    // no_new_privs, a seccomp filter.
    let pid = booted.devnetd_pid()?;
    let status = booted.ok(&["cat", &format!("/proc/{pid}/status")], &[])?;
    let field =
        |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default().to_owned();
    let keep = format!("{:016x}", (1u64 << 12) | (1u64 << 10));
    for (name, want) in
        [("CapEff:", keep.as_str()), ("CapBnd:", keep.as_str()), ("NoNewPrivs:", "1"), ("Seccomp:", "2")]
    {
        if field(name) != want {
            return Err(format!("devnetd's {name} is {}, not {want}:\n{status}", field(name)));
        }
    }
    let profile = alice_profile(lab, &root)?;
    // A user outside group devnet is refused with the fix.
    booted.ok(&["useradd", "--uid", "2202", "--user-group", "mallory"], &[])?;
    let out = booted.run(
        &["setpriv", "--reuid", "mallory", "--regid", "mallory", "--init-groups", "--", "devnet", "status"],
        &[],
    )?;
    if out.status.success() || !text(&out).contains("usermod -aG devnet") {
        return Err(format!("a user outside group devnet should be refused with the fix: {}", text(&out)));
    }
    // alice in a login from before the install: listed in the group, not
    // carrying it. She is told to log in again, not to join.
    let out = booted
        .run(&["setpriv", "--reuid", ALICE, "--regid", ALICE, "--clear-groups", "--", "devnet", "status"], &[])?;
    if out.status.success() || !text(&out).contains("log out and back in, or run `newgrp devnet`") {
        return Err(format!("a login from before the install should be told to log in again: {}", text(&out)));
    }
    let mut client = alice_connects(|cmd| booted.command(cmd, &[]), &root, &profile)?;
    let reached = alice_reaches_the_cluster(|cmd| booted.as_alice(cmd));
    let out = booted.as_alice(&["devnet", "disconnect"])?;
    let _ = client.wait();
    reached?;
    if !out.status.success() {
        return Err(format!("alice's disconnect: {}", text(&out)));
    }
    booted.ok(&["systemctl", "stop", "devnetd.service"], &[])?;
    let journal = booted.journal();
    if !journal.contains("devnetd stopped; every network change is undone") {
        return Err(format!("devnetd's journal after systemctl stop:\n{journal}"));
    }
    booted.poweroff();
    root_resolver_restored(&root)?;
    lab.laptop_unchanged("after alice disconnected and devnetd stopped")
}

fn root_resolver_restored(root: &Root) -> Res {
    let resolv = read(&root.path.join("etc/resolv.conf"))?;
    if devnet_dns::resolv_conf::is_managed(&resolv) {
        return Err(format!("the root's resolv.conf is still devnet's:\n{resolv}"));
    }
    Ok(())
}

/// devnetd killed mid-session: systemd restarts it, and the new one undoes
/// what the journal lists before it serves. Then purge: no file, no route.
fn crash_restart_purge(lab: &Lab) -> Res {
    let b = builds(lab)?;
    let root = Root::fresh(lab, "restart")?;
    let mut before = root.inventory()?;
    let mut booted = Booted::boot(lab, &root, "restart")?;
    // What booting itself writes (journald, logind, the machine id…) is the
    // system's, not the package's: the inventory before is taken booted.
    before = merge_boot_files(before, &root)?;
    booted.dpkg_install(&root, &[&b.current.devnet_deb, &b.current.tray_deb])?;
    let profile = alice_profile(lab, &root)?;
    let mut client = alice_connects(|cmd| booted.command(cmd, &[]), &root, &profile)?;
    let pid = booted.devnetd_pid()?;
    // A crash as systemd sees one: killed by a signal, so Restart= applies.
    booted.ok(&["systemctl", "kill", "--signal=SIGKILL", "devnetd.service"], &[])?;
    let _ = client.wait();
    let new_pid = booted.wait_devnetd(pid, Duration::from_secs(10))?;
    let journal = booted.journal();
    if !journal.contains("undid a previous session's changes") {
        return Err(format!("the restarted devnetd (pid {new_pid}) did not say it undid the journal:\n{journal}"));
    }
    root_resolver_restored(&root)?;
    lab.laptop_unchanged("after devnetd was killed and systemd restarted it")?;
    let said = booted.ok(&["dpkg", "--purge", "devnet-tray", "devnet"], &[])?;
    if booted.devnetd("LoadState")? != "not-found" {
        return Err(format!("devnetd.service is still known after the purge:\n{said}"));
    }
    booted.poweroff();
    lab.laptop_unchanged("after the purge")?;
    let after = root.inventory()?;
    let left = changes(&without_test_files(before), &without_test_files(after));
    if !left.is_empty() {
        return Err(format!("purge left the root different from before the install:\n{}", left.join("\n")));
    }
    Ok(())
}

/// Paths a boot creates or rewrites, added to `before` as the booted root
/// has them (they are the same with or without devnet).
fn merge_boot_files(mut before: BTreeMap<String, String>, root: &Root) -> Res<BTreeMap<String, String>> {
    let now = root.inventory()?;
    for (path, what) in now {
        if booted_noise(&path) {
            before.insert(path, what);
        }
    }
    Ok(before)
}

/// What systemd, journald and logind write at boot and shutdown.
fn booted_noise(path: &str) -> bool {
    [
        "/var/log/",
        "/var/lib/systemd/",
        "/run/",
        "/var/tmp/",
        "/etc/machine-id",
        "/var/lib/dbus/",
        "/etc/.pwd.lock",
        "/var/lib/private/",
    ]
    .iter()
    .any(|p| path.starts_with(p))
        || ["/run", "/var/lib/dbus", "/var/lib/private"].contains(&path)
}

/// The test's own files: alice's home (the profile it gave her), the
/// packages it copied in, the logs it keeps.
fn without_test_files(mut files: BTreeMap<String, String>) -> BTreeMap<String, String> {
    files.retain(|p, _| {
        !p.starts_with("/home/alice/")
            && !p.starts_with("/tmp/")
            && !p.starts_with(PACKAGES_IN_ROOT)
            && !["/devnetd.log", "/connect.log", "/run/devnetd-notify.sock"].contains(&p.as_str())
            && !booted_noise(p)
    });
    files
}

fn purge_after_crash(lab: &Lab) -> Res {
    let b = builds(lab)?;
    let root = Root::fresh(lab, "purge")?;
    let before = root.inventory()?;
    root.dpkg_install(&root, &[&b.current.devnet_deb, &b.current.tray_deb])?;
    let mut daemon = RootDaemon::start(&root)?;
    let profile = alice_profile(lab, &root)?;
    let mut client = alice_connects(|cmd| root.command(cmd, &[]), &root, &profile)?;
    // devnetd dies mid-session and nothing restarts it: its TUN device goes
    // with it, its policy rules and the resolver's file stay, journaled.
    daemon.kill();
    let _ = client.kill();
    let _ = client.wait();
    let resolv = read(&root.path.join("etc/resolv.conf"))?;
    if !devnet_dns::resolv_conf::is_managed(&resolv) {
        return Err(format!("expected devnet's resolv.conf after the crash (the test's premise):\n{resolv}"));
    }
    // Removal undoes it through the journal, then purge removes the rest.
    let said = root.ok(&["dpkg", "--purge", "devnet-tray", "devnet"], &[])?;
    if !said.contains("the journal in /var/lib/devnet/sessions/") {
        return Err(format!("the removal did not undo the journal:\n{said}"));
    }
    root_resolver_restored(&root)?;
    lab.laptop_unchanged("after purging devnet from the root")?;
    let left = changes(&without_test_files(before), &without_test_files(root.inventory()?));
    if !left.is_empty() {
        return Err(format!("purge left the root different from before the install:\n{}", left.join("\n")));
    }
    Ok(())
}

fn upgrade(lab: &Lab) -> Res {
    let b = builds(lab)?;
    let root = Root::fresh(lab, "upgrade")?;
    let booted = Booted::boot(lab, &root, "upgrade")?;
    let first = booted.dpkg_install(&root, &[&b.previous.devnet_deb, &b.previous.tray_deb])?;
    if !first.contains("added alice to group devnet") {
        return Err(format!("the first install did not add alice:\n{first}"));
    }
    let old_pid = booted.devnetd_pid()?;
    booted.ok(&["sh", "-c", "echo state >/var/lib/devnet/kept"], &[])?;
    let second = booted.dpkg_install(&root, &[&b.current.devnet_deb, &b.current.tray_deb])?;
    // An upgrade is quiet about the group (she is in it), keeps the state,
    // and restarts devnetd so the new binary serves.
    if second.contains("added alice") || second.contains("members of group devnet may use devnet") {
        return Err(format!("the upgrade spoke of the group again:\n{second}"));
    }
    let new_pid = booted.wait_devnetd(old_pid, Duration::from_secs(10))?;
    if !root.path.join("var/lib/devnet/kept").exists() {
        return Err("the upgrade removed devnetd's state directory".into());
    }
    let status = booted.ok(
        &[
            "dpkg-query",
            "--show",
            "--showformat",
            "${Package} ${Version} ${db:Status-Abbrev}\n",
            "devnet",
            "devnet-tray",
        ],
        &[],
    )?;
    let want = format!("devnet {v}-1 ii \ndevnet-tray {v}-1 ii \n", v = b.version);
    if status != want {
        return Err(format!("after the upgrade dpkg says:\n{status}\nnot\n{want}"));
    }
    if booted.devnetd("UnitFileState")? != "enabled" {
        return Err("the upgrade left devnetd disabled".into());
    }
    let line = group_line(&root)?.ok_or("the upgrade removed group devnet")?;
    if !line.ends_with(ALICE) {
        return Err(format!("group after the upgrade: {line}"));
    }
    // Installing the same build again changes no file (bar dpkg's own
    // records) and keeps devnetd serving.
    let before = without_test_files(root.inventory()?);
    booted.dpkg_install(&root, &[&b.current.devnet_deb])?;
    let again = changes(&before, &without_test_files(root.inventory()?));
    if !again.is_empty() {
        return Err(format!("installing the same build twice changed:\n{}", again.join("\n")));
    }
    booted.wait_devnetd(new_pid, Duration::from_secs(10))?;
    Ok(())
}

/// The .rpm's scriptlets, run by rpm itself (chrooted into a Debian root
/// with an rpm database of its own): install, upgrade, erase.
fn rpm_lifecycle(lab: &Lab) -> Res {
    let b = builds(lab)?;
    let root = Root::fresh(lab, "rpm")?;
    let before = root.inventory()?;
    // rpm runs on the host and chroots for each scriptlet, which finds the
    // root's /proc and /dev mounted as on a running system.
    let rpm = |args: &[&str], files: &[&Path]| -> Res<String> {
        let mut cmd = root.mounted();
        cmd.args(["env", "SUDO_USER=alice", "rpm", "--root"]).arg(&root.path).args(args);
        for f in files {
            cmd.arg(f);
        }
        let out = cmd.output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("rpm {args:?} failed: {}", text(&out)));
        }
        Ok(text(&out))
    };
    rpm(&["--initdb"], &[])?;
    // --nodeps: the Debian root's libraries are not in rpm's database.
    let said = rpm(&["-i", "--nodeps"], &[&b.previous.devnet_rpm, &b.previous.tray_rpm])?;
    if !said.contains("added alice to group devnet") || !group_line(&root)?.is_some_and(|l| l.ends_with(ALICE)) {
        return Err(format!("rpm -i did not add alice to group devnet:\n{said}"));
    }
    let said = rpm(&["-U", "--nodeps"], &[&b.current.devnet_rpm, &b.current.tray_rpm])?;
    if said.contains("added alice") {
        return Err(format!("the rpm upgrade spoke of the group again:\n{said}"));
    }
    if !root.enabled()? || group_line(&root)?.is_none() {
        return Err("the rpm upgrade's old %preun/%postun undid the install".into());
    }
    let verify = rpm(&["-V", "--nodeps", "devnet", "devnet-tray"], &[])?;
    if !verify.trim().is_empty() {
        return Err(format!("rpm -V devnet after the upgrade:\n{verify}"));
    }
    rpm(&["-e", "devnet-tray", "devnet"], &[])?;
    let left = changes(&before, &root.inventory()?);
    if !left.is_empty() {
        return Err(format!("rpm -e left the root different from before the install:\n{}", left.join("\n")));
    }
    let mut log = std::fs::File::create(artifacts().join("rpm-scripts.txt")).map_err(|e| e.to_string())?;
    let _ =
        log.write_all(run_ok(Command::new("rpm").args(["-qp", "--scripts"]).arg(&b.current.devnet_rpm))?.as_bytes());
    Ok(())
}
