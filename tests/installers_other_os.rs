//! The macOS package (`installers/macos/`) and the Windows MSI
//! (`installers/windows/`), checked on Linux as far as Linux allows. Neither
//! is built or installed here: no pkgbuild, launchd, WiX or Windows Installer
//! runs. What is checked:
//!
//! - the LaunchDaemon plist and pkgbuild's component plist parse (the `plist`
//!   crate) and hold what launchd and pkgbuild need; every argument given to
//!   devnetd (plist, Windows service) and to `devnet` (the uninstallers) is a
//!   flag or subcommand of the binaries' clap definitions, read from their
//!   sources;
//! - `Distribution.xml` and `devnet.wxs` are well-formed XML (quick-xml with
//!   end names checked, one root, no duplicate attributes) with the structure
//!   productbuild and WiX need; the package ids, the version, the state
//!   directory and WiX's variables agree across the files that name them; the
//!   MSI's NRPT fallback filters on `devnet_dns::windows::COMMENT` itself;
//! - the pkg's scripts run under bash with stub `launchctl`, `dscl`,
//!   `dseditgroup`, `pkgutil`, `id` and `devnet` that log their argv and keep
//!   a little state (loaded daemons, groups, receipts), in a scratch root
//!   (`DEVNET_TEST_ROOT`, the scripts' only seam). The commands they run, what
//!   they print and the files and state they leave are compared with golden
//!   files in `tests/fixtures/installers/`. The resolver files are written
//!   with `devnet_dns::macos::resolver_file`, so the uninstaller's marker
//!   test follows the crate's `MARKER`.
//!
//! `DEVNET_REGENERATE=1 cargo test -p devnet-lab --test installers_other_os`
//! rewrites the golden files. No root, no network.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("the repository")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

// ---------------------------------------------------------------------------
// The binaries' real command lines, from their clap definitions.

/// The long flags of one clap block, and whether each takes a value.
type Flags = BTreeMap<String, bool>;

/// The long flags declared in the clap block of `source` that opens with the
/// line `opening` (a struct, or an enum variant with named fields): each
/// field under an `#[arg(long …)]` is `--field-name` (or the explicit
/// `long = "…"`), taking a value unless it is a `bool`.
fn clap_flags(source: &str, opening: &str) -> Flags {
    let mut lines = source.lines().skip_while(|l| l.trim_end() != opening);
    assert!(lines.next().is_some(), "no line `{opening}` in the source");
    let mut flags = Flags::new();
    let mut long: Option<Option<String>> = None;
    let mut depth = 1isize;
    for line in lines {
        let code = line.trim();
        if code.starts_with("//") {
            continue;
        }
        depth += code.matches('{').count() as isize - code.matches('}').count() as isize;
        if depth <= 0 {
            break;
        }
        if let Some(inner) = code.strip_prefix("#[arg(") {
            for part in inner.trim_end_matches(")]").split(',').map(str::trim) {
                if part == "long" {
                    long = Some(None);
                } else if let Some(name) = part.strip_prefix("long").and_then(|r| r.trim().strip_prefix('=')) {
                    long = Some(Some(name.trim().trim_matches('"').to_owned()));
                }
            }
            continue;
        }
        if code.starts_with('#') {
            continue;
        }
        if let Some(explicit) = long.take() {
            let (field, ty) = code.split_once(':').unwrap_or_else(|| panic!("a field after #[arg(long)]: {code:?}"));
            let field = field.trim().trim_start_matches("pub ").trim();
            let name = explicit.unwrap_or_else(|| field.replace('_', "-"));
            flags.insert(format!("--{name}"), ty.trim().trim_end_matches(',') != "bool");
        }
    }
    flags
}

/// devnetd's flags (`crates/devnetd/src/main.rs`, `struct Args`).
fn devnetd_flags() -> Flags {
    let flags = clap_flags(&read("crates/devnetd/src/main.rs"), "struct Args {");
    assert!(flags.contains_key("--socket") && flags.contains_key("--state-dir"), "devnetd's flags: {flags:?}");
    flags
}

/// `devnet cleanup`'s flags: its own and the CLI's global ones.
fn cleanup_flags() -> Flags {
    let source = read("crates/devnet-cli/src/main.rs");
    let commands: String =
        source.lines().skip_while(|l| l.trim_end() != "enum Command {").take_while(|l| *l != "}").collect();
    assert!(commands.contains("    Cleanup {"), "`devnet cleanup` is a subcommand (variant Command::Cleanup)");
    let mut flags = clap_flags(&source, "    Cleanup {");
    flags.extend(clap_flags(&source, "struct Cli {"));
    assert!(flags.contains_key("--daemon-state-dir"), "cleanup's flags: {flags:?}");
    flags
}

/// Reads `args` as flags of `flags` with their values; panics, naming the
/// argument, on one the binary does not have.
fn flag_values(args: &[String], flags: &Flags, what: &str) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (arg.as_str(), None),
        };
        let takes_value = *flags.get(flag).unwrap_or_else(|| {
            panic!("{what} passes {arg:?}, which is not one of its flags {:?}", flags.keys().collect::<Vec<_>>())
        });
        let value = match (takes_value, inline) {
            (true, Some(v)) => v,
            (true, None) => rest.next().unwrap_or_else(|| panic!("{what}: {flag} without its value")).clone(),
            (false, None) => String::new(),
            (false, Some(_)) => panic!("{what}: {flag} takes no value"),
        };
        values.insert(flag.to_owned(), value);
    }
    values
}

/// Splits a Windows command line at spaces outside double quotes (the
/// quotes are dropped). The command lines here have no escaped quotes.
fn split_command_line(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quotes in {line:?}");
    if started {
        words.push(word);
    }
    words
}

#[test]
fn clap_flags_are_read_as_clap_defines_them() {
    let source = r#"
struct Args {
    /// A path {with braces} in its doc.
    #[arg(long, env = "X", default_value = "/run/x")]
    socket: PathBuf,
    #[arg(long = "cidr", value_delimiter = ',')]
    cidrs: Vec<String>,
    #[arg(long)]
    json: bool,
    #[arg(value_enum)]
    shell: Shell,
}
struct Other {
    #[arg(long)]
    not_this: String,
}
"#;
    let flags = clap_flags(source, "struct Args {");
    assert_eq!(flags, Flags::from([("--socket".into(), true), ("--cidr".into(), true), ("--json".into(), false)]));
    let args: Vec<String> = ["--socket", "/s", "--json", "--cidr=10.0.0.0/8"].map(String::from).to_vec();
    let values = flag_values(&args, &flags, "test");
    assert_eq!(values["--socket"], "/s");
    assert_eq!(values["--cidr"], "10.0.0.0/8");
    let bad = std::panic::catch_unwind(|| flag_values(&["--not-this".to_owned()], &flags, "test"));
    assert!(bad.is_err(), "a flag the binary lacks is refused");
    assert_eq!(
        split_command_line(r#""C:\Program Files\devnet\devnet.exe" cleanup --x "C:\A B""#),
        [r"C:\Program Files\devnet\devnet.exe", "cleanup", "--x", r"C:\A B"]
    );
}

// ---------------------------------------------------------------------------
// XML: a small tree, well-formedness checked by quick-xml.

#[derive(Debug)]
struct Element {
    name: String,
    attrs: BTreeMap<String, String>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn get(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }

    fn attr(&self, key: &str) -> &str {
        self.get(key).unwrap_or_else(|| panic!("<{}> has no {key}: {:?}", self.name, self.attrs))
    }

    /// Every element below this one, in document order.
    fn descendants(&self) -> Vec<&Element> {
        let mut all = Vec::new();
        for child in &self.children {
            all.push(child);
            all.extend(child.descendants());
        }
        all
    }

    fn all(&self, name: &str) -> Vec<&Element> {
        self.descendants().into_iter().filter(|e| e.name == name).collect()
    }

    /// The one element `name` below this one whose `key` is `value`.
    fn one(&self, name: &str, key: &str, value: &str) -> &Element {
        let found: Vec<&Element> = self.all(name).into_iter().filter(|e| e.get(key) == Some(value)).collect();
        assert_eq!(found.len(), 1, "exactly one <{name} {key}={value:?}> under <{}>", self.name);
        found[0]
    }

    /// The child elements named `name`.
    fn children(&self, name: &str) -> Vec<&Element> {
        self.children.iter().filter(|e| e.name == name).collect()
    }
}

fn element(start: &BytesStart<'_>) -> Result<Element, String> {
    let name = start.name().as_ref().to_owned();
    let mut attrs = BTreeMap::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| format!("<{name}>: {e}"))?;
        let key = attr.key.as_ref().to_owned();
        let value = attr.normalized_value(XmlVersion::Implicit1_0).map_err(|e| format!("<{name} {key}>: {e}"))?;
        if attrs.insert(key.clone(), value.into_owned()).is_some() {
            return Err(format!("<{name}> has {key} twice"));
        }
    }
    Ok(Element { name, attrs, children: Vec::new(), text: String::new() })
}

/// Parses a whole document: one root element, every tag closed by its own
/// name, attributes unique, entities the predefined ones.
fn parse_xml(text: &str) -> Result<Element, String> {
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let close = |el: Element, stack: &mut Vec<Element>, root: &mut Option<Element>| -> Result<(), String> {
        match stack.last_mut() {
            Some(parent) => parent.children.push(el),
            None if root.is_some() => return Err(format!("a second root element <{}>", el.name)),
            None => *root = Some(el),
        }
        Ok(())
    };
    loop {
        let event = reader.read_event().map_err(|e| format!("at byte {}: {e}", reader.error_position()))?;
        match event {
            Event::Start(start) => stack.push(element(&start)?),
            Event::Empty(start) => close(element(&start)?, &mut stack, &mut root)?,
            Event::End(_) => {
                let el = stack.pop().ok_or("an end tag without a start")?;
                close(el, &mut stack, &mut root)?;
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                match stack.last_mut() {
                    Some(top) => top.text.push_str(&content),
                    None if content.trim().is_empty() => {}
                    None => return Err(format!("text outside the root element: {content:?}")),
                }
            }
            Event::CData(c) => {
                let top = stack.last_mut().ok_or("CDATA outside the root element")?;
                top.text.push_str(&c);
            }
            Event::GeneralRef(r) => {
                let name = r.to_string();
                let resolved = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c.to_string(),
                    None => quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| format!("unknown entity &{name};"))?
                        .to_owned(),
                };
                stack.last_mut().ok_or("an entity outside the root element")?.text.push_str(&resolved);
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!("<{}> is never closed", open.name));
    }
    root.ok_or_else(|| "no root element".to_owned())
}

fn parse_file(rel: &str) -> Element {
    parse_xml(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not well-formed XML: {e}"))
}

#[test]
fn the_xml_check_refuses_what_is_not_well_formed() {
    for (bad, why) in [
        ("<a><b></a></b>", "crossed tags"),
        ("<a><b></b>", "unclosed"),
        ("<a/><b/>", "two roots"),
        (r#"<a x="1" x="2"/>"#, "duplicate attribute"),
        ("<a>fish & chips</a>", "bare ampersand"),
        ("<a>&nbsp;</a>", "undeclared entity"),
        ("", "empty"),
    ] {
        assert!(parse_xml(bad).is_err(), "{why}: {bad:?} was accepted");
    }
    let ok = parse_xml(r#"<?xml version="1.0"?><!-- c --><a k="&quot;q&quot;"><b>x &amp; y</b><c/></a>"#)
        .expect("well-formed");
    assert_eq!(ok.attr("k"), "\"q\"");
    assert_eq!(ok.children("b")[0].text, "x & y");
    assert_eq!(ok.children.len(), 2);
}

// ---------------------------------------------------------------------------
// macOS: the LaunchDaemon, the component list and the distribution.

const PLIST: &str = "installers/macos/dev.devnet.devnetd.plist";
const DISTRIBUTION: &str = "installers/macos/Distribution.xml";
const BUILD_PKG: &str = "installers/macos/build-pkg.sh";

/// What the package installs (build-pkg.sh's two roots, as installed).
const PAYLOAD: &[&str] = &[
    "/Library/LaunchDaemons/dev.devnet.devnetd.plist",
    "/usr/local/libexec/devnetd",
    "/usr/local/bin/devnet",
    "/usr/local/share/devnet/uninstall.sh",
    "/Applications/devnet.app",
];

fn read_plist(rel: &str) -> plist::Value {
    plist::Value::from_reader_xml(std::fs::File::open(repo().join(rel)).expect("open"))
        .unwrap_or_else(|e| panic!("{rel} is not a property list: {e}"))
}

/// devnetd's arguments in the LaunchDaemon plist, as flag → value.
fn plist_devnetd_flags() -> BTreeMap<String, String> {
    let plist = read_plist(PLIST);
    let args: Vec<String> = plist.as_dictionary().expect("a dict")["ProgramArguments"]
        .as_array()
        .expect("ProgramArguments is an array")
        .iter()
        .map(|a| a.as_string().expect("ProgramArguments holds strings").to_owned())
        .collect();
    flag_values(&args[1..], &devnetd_flags(), "the LaunchDaemon plist")
}

#[test]
fn the_launch_daemon_starts_devnetd_at_boot_with_flags_it_has() {
    let plist = read_plist(PLIST);
    let dict = plist.as_dictionary().expect("the plist's root is a dict");
    let label = dict.get("Label").and_then(plist::Value::as_string).expect("Label");
    let stem = Path::new(PLIST).file_stem().and_then(|s| s.to_str()).expect("name");
    assert_eq!(label, stem, "launchd's label is the plist's file name");

    let args = dict.get("ProgramArguments").and_then(plist::Value::as_array).expect("ProgramArguments");
    let program = args[0].as_string().expect("a path");
    assert_eq!(program, "/usr/local/libexec/devnetd");
    assert!(PAYLOAD.contains(&program), "the package installs {program}");
    assert!(!dict.contains_key("Program"), "ProgramArguments alone names the program");

    assert_eq!(dict.get("RunAtLoad").and_then(plist::Value::as_boolean), Some(true), "started at boot");
    // Restarted when it fails: KeepAlive true, or {SuccessfulExit: false}.
    match dict.get("KeepAlive").expect("KeepAlive") {
        plist::Value::Boolean(b) => assert!(b, "KeepAlive false would never restart it"),
        plist::Value::Dictionary(d) => {
            assert_eq!(d.get("SuccessfulExit").and_then(plist::Value::as_boolean), Some(false), "{d:?}");
        }
        other => panic!("KeepAlive is {other:?}"),
    }
    // Time to undo every session after SIGTERM, as TimeoutStopSec on Linux.
    let exit_timeout = dict.get("ExitTimeOut").and_then(plist::Value::as_signed_integer).expect("ExitTimeOut");
    assert!(exit_timeout >= 20, "ExitTimeOut {exit_timeout}");
    // Runs as root: a UserName or GroupName would take what it needs away.
    assert!(!dict.contains_key("UserName") && !dict.contains_key("GroupName"));

    let flags = plist_devnetd_flags();
    let socket = &flags["--socket"];
    assert!(
        socket.starts_with("/var/run/"),
        "{socket}: /run is on macOS's read-only system volume; /var/run is its run directory"
    );
    assert!(flags["--state-dir"].starts_with('/'));
    assert!(!flags.contains_key("--resolv-conf"), "macOS's resolver is /etc/resolver, not resolv.conf");
}

#[test]
fn the_tray_app_component_stays_in_applications() {
    let list = read_plist("installers/macos/tray-components.plist");
    let bundles = list.as_array().expect("pkgbuild's component list is an array");
    assert_eq!(bundles.len(), 1);
    let app = bundles[0].as_dictionary().expect("a dict");
    assert_eq!(app.get("RootRelativeBundlePath").and_then(plist::Value::as_string), Some("devnet.app"));
    assert_eq!(
        app.get("BundleIsRelocatable").and_then(plist::Value::as_boolean),
        Some(false),
        "a relocatable bundle would update a stray copy instead of /Applications/devnet.app"
    );
    assert!(PAYLOAD.contains(&"/Applications/devnet.app"));
    let build = read(BUILD_PKG);
    assert!(build.contains("--component-plist installers/macos/tray-components.plist"));
    assert!(build.contains("--install-location /Applications"));
}

#[test]
fn the_distribution_installs_both_packages_of_this_version() {
    let dist = parse_file(DISTRIBUTION);
    assert_eq!(dist.name, "installer-gui-script");
    assert_eq!(dist.attr("minSpecVersion"), "2");
    assert_eq!(dist.children("title").first().map(|t| t.text.trim()), Some("devnet"));

    // The system volume only: the scripts write /Library and /etc there.
    let domains = &dist.children("domains")[0];
    assert_eq!(domains.attr("enable_localSystem"), "true");
    assert_eq!(domains.attr("enable_anywhere"), "false");
    assert_eq!(domains.attr("enable_currentUserHome"), "false");
    let options = &dist.children("options")[0];
    assert_eq!(options.attr("customize"), "never", "the app without devnetd is useless");
    let arches: BTreeSet<&str> = options.attr("hostArchitectures").split(',').collect();
    assert_eq!(arches, BTreeSet::from(["arm64", "x86_64"]));

    // Every package is in a choice, every choice in the outline.
    let refs: Vec<&Element> = dist.children("pkg-ref");
    let ids: BTreeSet<&str> = refs.iter().map(|r| r.attr("id")).collect();
    assert_eq!(ids, BTreeSet::from(["dev.devnet.pkg.daemon", "dev.devnet.pkg.tray"]));
    let outline: BTreeSet<&str> =
        dist.children("choices-outline")[0].all("line").iter().map(|l| l.attr("choice")).collect();
    for choice in dist.children("choice") {
        assert!(outline.contains(choice.attr("id")), "choice {} is in the outline", choice.attr("id"));
        for pkg in choice.children("pkg-ref") {
            assert!(ids.contains(pkg.attr("id")));
        }
    }
    let chosen: BTreeSet<&str> =
        dist.children("choice").iter().flat_map(|c| c.children("pkg-ref")).map(|r| r.attr("id")).collect();
    assert_eq!(chosen, ids, "each package is installed by a choice");

    // The files and identifiers are the ones build-pkg.sh makes.
    let build = read(BUILD_PKG);
    let built: BTreeSet<&str> = build
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "--identifier")
        .map(|w| w[1])
        .collect();
    assert_eq!(built, ids, "build-pkg.sh's pkgbuild --identifier values");
    for r in &refs {
        assert_eq!(
            r.attr("version"),
            env!("CARGO_PKG_VERSION"),
            "{DISTRIBUTION}: bump {} to the workspace's version",
            r.attr("id")
        );
        let file = r.text.trim();
        assert!(build.contains(&format!("\"$out/{file}\"")), "build-pkg.sh writes {file}");
    }
    assert!(build.contains("--distribution installers/macos/Distribution.xml"));
    assert!(build.contains("--scripts installers/macos/scripts"));
    // And it lays out what the scripts and the plist expect installed.
    for path in PAYLOAD {
        let staged = if path.starts_with("/Applications/") {
            format!("\"$stage/tray-root/{}\"", path.trim_start_matches("/Applications/"))
        } else {
            format!("\"$root{path}\"")
        };
        assert!(build.contains(&staged), "build-pkg.sh stages {path} as {staged}");
    }
}

// ---------------------------------------------------------------------------
// macOS: the scripts, run with stub commands in a scratch root.

const PREINSTALL: &str = "installers/macos/scripts/preinstall";
const POSTINSTALL: &str = "installers/macos/scripts/postinstall";
const UNINSTALL: &str = "installers/macos/uninstall.sh";

/// The stubs: each logs its argv (shell-quoted) to `$STUB_LOG` and keeps what
/// it changes under `$STUB_STATE` (loaded daemons, groups, receipts), so a
/// second run sees the first one's effects.
const STUBS: &[(&str, &str)] = &[
    (
        "launchctl",
        r#"label=${2#system/}
case $1 in
  print)
    if [[ -e $STUB_STATE/launchd/$label ]]; then echo "system/$label = { state = running }"; exit 0; fi
    echo "Could not find service \"$label\" in domain for system" >&2; exit 113 ;;
  bootstrap)
    [[ $2 == system && -f $3 ]] || { echo "Bootstrap failed: 5: Input/output error" >&2; exit 5; }
    label=$(sed -n '/<key>Label<\/key>/{n;s/.*<string>\(.*\)<\/string>.*/\1/p;}' "$3")
    [[ -e $STUB_STATE/launchd/$label ]] && { echo "Bootstrap failed: 37: Operation already in progress" >&2; exit 37; }
    mkdir -p "$STUB_STATE/launchd" && : >"$STUB_STATE/launchd/$label" ;;
  bootout)
    [[ -e $STUB_STATE/launchd/$label ]] || { echo "Boot-out failed: 3: No such process" >&2; exit 3; }
    rm "$STUB_STATE/launchd/$label" ;;
  kickstart)
    [[ $2 == -k && -e $STUB_STATE/launchd/${3#system/} ]] || exit 113 ;;
  *) exit 64 ;;
esac"#,
    ),
    (
        "dscl",
        r#"[[ $1 == . && $2 == -read && $3 == /Groups/* ]] || exit 64
group=$STUB_STATE/groups/${3#/Groups/}
[[ -d $group ]] || { echo "<dscl_cmd> DS Error: -14136 (eDSRecordNotFound)" >&2; exit 56; }
case ${4:-} in
  '') echo "RecordName: ${3#/Groups/}" ;;
  Comment)
    [[ -f $group/comment ]] || { echo "No such key: Comment" >&2; exit 181; }
    printf 'Comment:\n %s\n' "$(cat "$group/comment")" ;;
  *) exit 64 ;;
esac"#,
    ),
    (
        "dseditgroup",
        r#"op= realname= comment= add= type= member=
while (($# > 1)); do
  case $1 in
    -o) op=$2 ;; -r) realname=$2 ;; -c) comment=$2 ;; -a) add=$2 ;; -t) type=$2 ;; -m) member=$2 ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
  shift 2
done
name=$1 group=$STUB_STATE/groups/$1
case $op in
  create)
    [[ ! -d $group ]] || { echo "Group already exists" >&2; exit 65; }
    mkdir -p "$group" && : >"$group/members"
    [[ -z $realname ]] || printf '%s\n' "$realname" >"$group/realname"
    [[ -z $comment ]] || printf '%s\n' "$comment" >"$group/comment" ;;
  edit)
    [[ -d $group && -n $add && $type == user ]] || exit 64
    echo "$add" >>"$group/members" ;;
  checkmember)
    if [[ -d $group ]] && grep -qx -- "$member" "$group/members"; then echo "yes $member is a member of $name"; exit 0; fi
    echo "no $member is NOT a member of $name"; exit 67 ;;
  delete)
    [[ -d $group ]] || exit 56
    rm -r "$group" ;;
  *) exit 64 ;;
esac"#,
    ),
    (
        "pkgutil",
        r#"receipt=$STUB_STATE/receipts/$2
[[ -e $receipt ]] || { echo "No receipt for '$2' found at '/'." >&2; exit 1; }
case $1 in
  --pkg-info) echo "package-id: $2" ;;
  --forget) rm "$receipt"; echo "Forgot package '$2' on '/'." ;;
  *) exit 64 ;;
esac"#,
    ),
    ("id", r#"[[ $1 == -u ]] || exit 64; echo "${STUB_UID:-0}""#),
];

/// The `devnet` the payload installs: logs, and fails when told to.
const DEVNET_STUB: &str = r#"if [[ -n ${STUB_DEVNET_FAILS:-} ]]; then
  echo "error: undoing the journal in /var/lib/devnet/sessions/devnet0: route: writing to routing socket: permission denied" >&2
  exit 1
fi
echo "nothing to undo: the journal is empty""#;

fn stub_script(body: &str) -> String {
    format!(
        "#!/bin/bash\nset -u\n{{ printf '%s' \"${{0##*/}}\"; printf ' %q' \"$@\"; printf '\\n'; }} >>\"$STUB_LOG\"\n{body}\n"
    )
}

fn write_executable(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, contents).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn write_file(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, contents).expect("write");
}

/// A scratch Mac: the root the scripts see, the stubs on PATH and their state.
struct Mac {
    dir: PathBuf,
    root: PathBuf,
    stubs: PathBuf,
    state: PathBuf,
    log: PathBuf,
    golden: String,
    last: Option<(String, String)>,
}

/// The lines of `now` not in `before` (`+`) and of `before` not in `now` (`-`).
fn changes(before: &str, now: &str) -> String {
    let (before, now): (BTreeSet<&str>, BTreeSet<&str>) = (before.lines().collect(), now.lines().collect());
    let mut out: Vec<String> = now.difference(&before).map(|l| format!("+ {l}")).collect();
    out.extend(before.difference(&now).map(|l| format!("- {l}")));
    if out.is_empty() { "(unchanged)".to_owned() } else { out.join("\n") }
}

/// One script's run.
struct Run {
    code: i32,
    commands: Vec<String>,
}

impl Mac {
    fn new(name: &str) -> Mac {
        let dir = std::env::temp_dir().join(format!("devnet-installers-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mac = Mac {
            root: dir.join("root"),
            stubs: dir.join("stubs"),
            state: dir.join("state"),
            log: dir.join("log"),
            dir,
            golden: String::new(),
            last: None,
        };
        for (stub, body) in STUBS {
            write_executable(&mac.stubs.join(stub), &stub_script(body));
        }
        std::fs::create_dir_all(&mac.state).expect("mkdir");
        // What a Mac has before devnet: another daemon, another program, and
        // a VPN client's resolver file.
        write_file(&mac.root.join("Library/LaunchDaemons/com.example.vpn.plist"), "<plist/>\n");
        write_executable(&mac.root.join("usr/local/bin/kubectl"), "#!/bin/sh\n");
        write_file(&mac.root.join("etc/resolver/corp.example"), "nameserver 10.0.0.1\n");
        write_file(&mac.root.join("etc/resolver/vpn.example"), "# Tunnelblick\nnameserver 10.8.0.1\n");
        write_file(
            &mac.root.join("etc/resolver/ops.example"),
            "# devnetops: the office's resolver\nnameserver 10.0.0.3\n",
        );
        mac
    }

    fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    fn note(&mut self, text: &str) {
        let _ = writeln!(self.golden, "### {text}\n");
    }

    /// What Installer does between the scripts: lay down both packages'
    /// payloads (over an older one on upgrade) and record the receipts of the
    /// packages Distribution.xml names.
    fn install_payload(&mut self) {
        for path in PAYLOAD {
            let at = self.path(path);
            match *path {
                "/Library/LaunchDaemons/dev.devnet.devnetd.plist" => write_file(&at, &read(PLIST)),
                "/usr/local/share/devnet/uninstall.sh" => write_executable(&at, &read(UNINSTALL)),
                "/usr/local/bin/devnet" => write_executable(&at, &stub_script(DEVNET_STUB)),
                "/Applications/devnet.app" => {
                    write_executable(&at.join("Contents/MacOS/devnet-tray"), "#!/bin/sh\n");
                    write_executable(&at.join("Contents/MacOS/devnet"), &stub_script(DEVNET_STUB));
                }
                _ => write_executable(&at, "#!/bin/sh\n"),
            }
        }
        for r in parse_file(DISTRIBUTION).children("pkg-ref") {
            write_file(&self.state.join("receipts").join(r.attr("id")), "");
        }
        self.note("Installer lays down the payload and records the receipts");
        self.snapshot();
    }

    /// What a running devnetd leaves: its socket, a session's journal, its
    /// log, and resolver files for the cluster's domains (as devnet-dns
    /// writes them).
    fn devnetd_ran(&mut self) {
        let stub: std::net::IpAddr = "169.254.53.53".parse().expect("ip");
        for domain in ["cluster.local", "demo"] {
            write_file(&self.path("/etc/resolver").join(domain), &devnet_dns::macos::resolver_file(stub));
        }
        // Not ours: devnet's marker, but not where devnet writes it.
        write_file(&self.path("/etc/resolver/team.example"), "nameserver 10.0.0.2\n# devnet-managed\n");
        write_file(&self.path("/var/run/devnet/devnetd.sock"), "");
        write_file(&self.path("/var/lib/devnet/devnetd.lock"), "");
        write_file(&self.path("/var/lib/devnet/sessions/devnet0/journal"), "");
        write_file(&self.path("/var/log/devnetd.log"), "devnetd serving\n");
        self.note("devnetd runs: its socket, a session's journal, its log, resolver files for cluster.local and demo");
        self.snapshot();
    }

    fn normalise(&self, text: &str) -> String {
        text.replace(&self.root.display().to_string(), "<ROOT>").replace(&repo().display().to_string(), "<REPO>")
    }

    /// Runs `script` under bash as Installer or sudo would, with `env`.
    fn run(&mut self, title: &str, script: &str, env: &[(&str, &str)]) -> Run {
        std::fs::write(&self.log, "").expect("log");
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join(script))
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", self.stubs.display()))
            .env("LC_ALL", "C")
            .env("DEVNET_TEST_ROOT", &self.root)
            .env("STUB_STATE", &self.state)
            .env("STUB_LOG", &self.log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("bash runs");
        let code = out.status.code().unwrap_or(-1);
        let commands: Vec<String> =
            self.normalise(&std::fs::read_to_string(&self.log).expect("log")).lines().map(str::to_owned).collect();
        let env_words: String = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        let _ = writeln!(self.golden, "### {title}\n$ {env_words}bash {script}\nexit {code}");
        self.section("commands", &commands.join("\n"));
        self.section("stdout", &self.normalise(&String::from_utf8_lossy(&out.stdout)));
        self.section("stderr", &self.normalise(&String::from_utf8_lossy(&out.stderr)));
        self.snapshot();
        Run { code, commands }
    }

    fn section(&mut self, name: &str, body: &str) {
        let _ = writeln!(self.golden, "{name}:");
        let lines: Vec<&str> = body.lines().collect();
        if lines.is_empty() {
            let _ = writeln!(self.golden, "  (none)");
        }
        for line in lines {
            let _ = writeln!(self.golden, "  {line}");
        }
    }

    /// The files and the stubs' state: in full the first time, then what
    /// changed since the last snapshot (`+` added, `-` gone).
    fn snapshot(&mut self) {
        let now = (self.files(), self.system());
        let shown = match &self.last {
            None => now.clone(),
            Some(last) => (changes(&last.0, &now.0), changes(&last.1, &now.1)),
        };
        self.section("files", &shown.0);
        self.section("system", &shown.1);
        self.golden.push('\n');
        self.last = Some(now);
    }

    /// Every path under the root (directories end in `/`).
    fn files(&self) -> String {
        list(&self.root, &self.root).join("\n")
    }

    /// The stubs' state: loaded daemons, groups (comment, members), receipts.
    fn system(&self) -> String {
        list(&self.state, &self.state)
            .into_iter()
            .filter(|p| !p.ends_with('/'))
            .map(|p| {
                let text = std::fs::read_to_string(self.state.join(&p)).expect("state file");
                let text = text.trim_end().replace('\n', ", ");
                if text.is_empty() { p } else { format!("{p}: {text}") }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Compares the transcript with `tests/fixtures/installers/<name>.txt`.
    fn check_golden(&self, name: &str) {
        let path = repo().join("tests/fixtures/installers").join(format!("{name}.txt"));
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if want == self.golden {
            return;
        }
        if std::env::var_os("DEVNET_REGENERATE").is_some() {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, &self.golden).expect("write golden");
            return;
        }
        let line = want.lines().zip(self.golden.lines()).position(|(a, b)| a != b);
        let at = match line {
            _ if want.is_empty() => "it is missing".to_owned(),
            Some(l) => format!("first at line {}", l + 1),
            None => "one is longer".to_owned(),
        };
        panic!(
            "{} differs from this run ({at}); rerun with DEVNET_REGENERATE=1 if the change is meant.\n--- this run:\n{}",
            path.display(),
            self.golden
        );
    }
}

impl Drop for Mac {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn list(dir: &Path, base: &Path) -> Vec<String> {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.expect("entry").path()).collect(),
        Err(_) => return Vec::new(),
    };
    entries.sort();
    let mut out = Vec::new();
    for path in entries {
        let rel = path.strip_prefix(base).expect("under base").display().to_string();
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        if meta.is_dir() {
            out.push(format!("{rel}/"));
            out.extend(list(&path, base));
        } else {
            out.push(rel);
        }
    }
    out
}

/// Commands that only look.
fn read_only(command: &str) -> bool {
    ["id -u", "launchctl print ", "pkgutil --pkg-info ", "dscl . -read "].iter().any(|p| command.starts_with(p))
}

#[test]
fn pkg_install_upgrade_and_uninstall_twice() {
    let mut mac = Mac::new("lifecycle");
    let label = read_plist(PLIST).as_dictionary().expect("dict")["Label"].as_string().expect("label").to_owned();

    // A first install from Installer.app, which sets USER to the user.
    let run = mac.run("first install: preinstall finds no devnetd", PREINSTALL, &[("USER", "alice")]);
    assert_eq!(run.code, 0);
    assert!(run.commands.iter().all(|c| read_only(c)), "{:?}", run.commands);
    mac.install_payload();
    let run = mac.run("first install: postinstall from Installer.app", POSTINSTALL, &[("USER", "alice")]);
    assert_eq!(run.code, 0);
    assert!(mac.state.join("launchd").join(&label).exists(), "devnetd is loaded");
    let members = std::fs::read_to_string(mac.state.join("groups/devnet/members")).expect("group devnet");
    assert_eq!(members, "alice\n");
    mac.devnetd_ran();

    // An upgrade with `sudo installer -pkg`: USER=root, SUDO_USER=alice.
    let sudo = [("USER", "root"), ("SUDO_USER", "alice")];
    let run = mac.run("upgrade: preinstall stops the running devnetd", PREINSTALL, &sudo);
    assert_eq!(run.code, 0);
    assert!(run.commands.contains(&format!("launchctl bootout system/{label}")));
    mac.install_payload();
    let run = mac.run("upgrade: postinstall (the group and alice are there already)", POSTINSTALL, &sudo);
    assert_eq!(run.code, 0);
    assert!(
        run.commands.iter().all(|c| read_only(c)
            || c.starts_with("dseditgroup -o checkmember")
            || c.starts_with("launchctl bootstrap"))
    );

    // Uninstall: a resolver file goes exactly when devnet-dns calls it ours.
    let resolver_dir = mac.path("/etc/resolver");
    let resolver_files: Vec<(String, String)> = list(&resolver_dir, &resolver_dir)
        .into_iter()
        .map(|name| {
            let contents = std::fs::read_to_string(resolver_dir.join(&name)).expect("resolver file");
            (name, contents)
        })
        .collect();
    let run = mac.run("uninstall.sh under sudo", UNINSTALL, &sudo);
    assert_eq!(run.code, 0);
    let cleanup = run.commands.iter().find(|c| c.starts_with("devnet cleanup")).expect("devnet cleanup ran");
    let args: Vec<String> = cleanup.split_whitespace().skip(2).map(str::to_owned).collect();
    let values = flag_values(&args, &cleanup_flags(), "uninstall.sh's devnet cleanup");
    assert_eq!(
        values["--daemon-state-dir"],
        format!("<ROOT>{}", plist_devnetd_flags()["--state-dir"]),
        "cleanup reads the journals where the LaunchDaemon's devnetd writes them"
    );
    for (name, contents) in &resolver_files {
        let ours = devnet_dns::macos::is_ours(contents);
        assert_eq!(resolver_dir.join(name).exists(), !ours, "/etc/resolver/{name} (ours: {ours}): {contents:?}");
    }
    let ours = resolver_files.iter().filter(|(_, c)| devnet_dns::macos::is_ours(c)).count();
    assert!(ours == 2 && resolver_files.len() > ours, "both kinds were there: {resolver_files:?}");
    for path in PAYLOAD.iter().chain(&["/var/lib/devnet", "/var/run/devnet", "/var/log/devnetd.log"]) {
        assert!(!mac.path(path).exists(), "{path} is left");
    }
    assert!(
        mac.path("/usr/local/bin/kubectl").exists()
            && mac.path("/Library/LaunchDaemons/com.example.vpn.plist").exists()
    );
    assert_eq!(mac.system(), "", "daemon unloaded, receipts forgotten, group deleted");
    let (files, system) = (mac.files(), mac.system());

    let run = mac.run("uninstall.sh again: nothing left to do", UNINSTALL, &sudo);
    assert_eq!(run.code, 0);
    assert!(run.commands.iter().all(|c| read_only(c)), "a second uninstall only looks: {:?}", run.commands);
    assert_eq!((mac.files(), mac.system()), (files, system), "a second uninstall changes nothing");

    mac.check_golden("macos-lifecycle");
}

#[test]
fn pkg_on_a_managed_mac_leaves_what_is_not_devnets() {
    let mut mac = Mac::new("managed");
    // An administrator made group devnet by hand, and devnetd is loaded (an
    // earlier copy installed without this package's preinstall).
    write_file(&mac.state.join("groups/devnet/members"), "");
    write_file(&mac.state.join("launchd/dev.devnet.devnetd"), "");
    mac.note("an administrator's group devnet (no comment); a devnetd already loaded");
    mac.snapshot();
    mac.install_payload();
    // An MDM install: neither USER nor SUDO_USER names a person.
    let run = mac.run("postinstall from an MDM agent", POSTINSTALL, &[]);
    assert_eq!(run.code, 0);
    assert!(run.commands.contains(&"launchctl kickstart -k system/dev.devnet.devnetd".to_owned()));
    assert!(!run.commands.iter().any(|c| c.starts_with("dseditgroup")), "the group and its members are left alone");
    mac.devnetd_ran();

    // devnet cleanup fails: devnetd is stopped, and nothing else changes.
    let before = mac.files();
    let run = mac.run("uninstall.sh when devnet cleanup fails", UNINSTALL, &[("STUB_DEVNET_FAILS", "1")]);
    assert_eq!(run.code, 1);
    assert_eq!(mac.files(), before, "the journals, and devnet that reads them, are kept");
    assert!(!mac.state.join("launchd/dev.devnet.devnetd").exists());

    // Once it succeeds, all of devnet goes but the administrator's group.
    let run = mac.run("uninstall.sh again once devnet cleanup succeeds", UNINSTALL, &[]);
    assert_eq!(run.code, 0);
    assert!(!mac.path("/var/lib/devnet").exists());
    assert!(!mac.path("/etc/resolver/cluster.local").exists() && mac.path("/etc/resolver/corp.example").exists());
    assert!(!run.commands.iter().any(|c| c.starts_with("dseditgroup")), "a group the installer did not make is kept");
    assert_eq!(mac.system(), "groups/devnet/members");
    mac.check_golden("macos-managed");
}

#[test]
fn uninstall_without_root_changes_nothing() {
    let mut mac = Mac::new("notroot");
    mac.install_payload();
    let before = (mac.files(), mac.system());
    let run = mac.run("uninstall.sh without sudo", UNINSTALL, &[("STUB_UID", "501"), ("USER", "alice")]);
    assert_eq!(run.code, 1);
    assert_eq!(run.commands, ["id -u"]);
    assert_eq!((mac.files(), mac.system()), before);
    mac.check_golden("macos-uninstall-not-root");
}

#[test]
fn scripts_are_bash_that_parses_and_is_executable() {
    let scripts = [PREINSTALL, POSTINSTALL, UNINSTALL, BUILD_PKG];
    for script in scripts {
        let path = repo().join(script);
        let text = read(script);
        // Installer runs scripts by their #! line; macOS's bash is /bin/bash.
        assert!(text.starts_with("#!/bin/bash\n"), "{script} starts with #!/bin/bash");
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode();
        assert!(mode & 0o111 == 0o111, "{script} is executable (pkgbuild keeps the mode): {mode:o}");
        let out = Command::new("bash").arg("-n").arg(&path).output().expect("bash");
        assert!(out.status.success(), "bash -n {script}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("set -euo pipefail"), "{script} stops at the first failure");
    }
    // shellcheck when the machine has it (it is not installed for this).
    match Command::new("shellcheck").arg("--version").output() {
        Ok(o) if o.status.success() => {
            let out = Command::new("shellcheck")
                .args(["-s", "bash"])
                .args(scripts.iter().map(|s| repo().join(s)))
                .output()
                .expect("shellcheck");
            assert!(out.status.success(), "shellcheck:\n{}", String::from_utf8_lossy(&out.stdout));
        }
        _ => eprintln!("shellcheck is not installed: only bash -n checked the scripts"),
    }
}

// ---------------------------------------------------------------------------
// Windows: devnet.wxs and build-msi.ps1.

const WXS: &str = "installers/windows/devnet.wxs";
const BUILD_MSI: &str = "installers/windows/build-msi.ps1";

fn package() -> Element {
    let wix = parse_file(WXS);
    assert_eq!(wix.name, "Wix");
    assert_eq!(wix.attr("xmlns"), "http://wixtoolset.org/schemas/v4/wxs", "WiX v4's namespace");
    assert_eq!(wix.attr("xmlns:util"), "http://wixtoolset.org/schemas/v4/wxs/util");
    let mut wix = wix;
    assert_eq!(wix.children.len(), 1, "one Package");
    wix.children.remove(0)
}

/// The components under `parent`, by the file name of each one's File.
fn files_by_name(parent: &Element) -> BTreeMap<String, &Element> {
    parent
        .all("Component")
        .into_iter()
        .flat_map(|c| c.children("File").into_iter().map(move |f| (f, c)))
        .map(|(f, c)| (f.attr("Source").rsplit('\\').next().expect("a name").to_owned(), c))
        .collect()
}

/// devnetd's arguments in the service, as flag → value.
fn service_flags(package: &Element) -> BTreeMap<String, String> {
    let service = package.all("ServiceInstall")[0];
    flag_values(&split_command_line(service.attr("Arguments")), &devnetd_flags(), "the devnetd service")
}

#[test]
fn the_msi_installs_devnetd_as_a_local_system_service_that_restarts() {
    let package = package();
    assert_eq!(package.name, "Package");
    assert_eq!(package.attr("Scope"), "perMachine", "a service needs an all-users install");
    assert_eq!(package.attr("Version"), "$(var.Version)");
    let upgrade = package.attr("UpgradeCode");
    let groups: Vec<usize> = upgrade.split('-').map(str::len).collect();
    assert!(groups == [8, 4, 4, 4, 12] && upgrade.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{upgrade}");
    assert_eq!(package.children("MajorUpgrade").len(), 1, "a newer MSI replaces an older one");

    let folder = package.one("StandardDirectory", "Id", "ProgramFiles64Folder").children("Directory")[0];
    assert_eq!(folder.attr("Id"), "INSTALLFOLDER");
    let files = files_by_name(folder);
    assert_eq!(files.keys().map(String::as_str).collect::<Vec<_>>(), ["devnet-tray.exe", "devnet.exe", "devnetd.exe"]);

    let component = files["devnetd.exe"];
    let service = &component.children("ServiceInstall")[0];
    assert_eq!(service.attr("Name"), "devnetd");
    assert_eq!(service.attr("Account"), "LocalSystem");
    assert_eq!(service.attr("Type"), "ownProcess");
    assert_eq!(service.attr("Start"), "auto", "running before anyone opens the tray app");
    let flags = service_flags(&package);
    assert!(flags["--state-dir"].starts_with("[CommonAppDataFolder]"), "journals in ProgramData: {flags:?}");

    let restart = &service.children("util:ServiceConfig")[0];
    for key in ["FirstFailureActionType", "SecondFailureActionType", "ThirdFailureActionType"] {
        assert_eq!(restart.attr(key), "restart", "{key}");
    }
    let delay: u32 = restart.attr("RestartServiceDelayInSeconds").parse().expect("seconds");
    assert!(delay <= 10, "restarted soon after a crash: {delay} s");

    let control = &component.children("ServiceControl")[0];
    assert_eq!(control.attr("Name"), service.attr("Name"));
    assert_eq!(control.attr("Start"), "install");
    assert_eq!(control.attr("Stop"), "both", "stopped before its files are replaced or removed");
    assert_eq!(control.attr("Remove"), "uninstall");
    assert_eq!(control.attr("Wait"), "yes", "cleanup must not run while devnetd still undoes its sessions");

    // The Start menu opens the tray app.
    let menu = package.one("StandardDirectory", "Id", "ProgramMenuFolder");
    let shortcut = menu.all("Shortcut")[0];
    assert_eq!(shortcut.attr("Target"), "[INSTALLFOLDER]devnet-tray.exe");
    assert!(files.contains_key("devnet-tray.exe"));

    // Every component is in the feature.
    let components: BTreeSet<&str> = package.all("Component").iter().map(|c| c.attr("Id")).collect();
    let featured: BTreeSet<&str> =
        package.children("Feature")[0].all("ComponentRef").iter().map(|c| c.attr("Id")).collect();
    assert_eq!(components, featured);
}

#[test]
fn the_msi_uninstall_runs_devnet_cleanup_then_removes_only_devnets_nrpt_rules() {
    let package = package();
    let sequence = &package.children("InstallExecuteSequence")[0];
    let customs = sequence.children("Custom");
    assert_eq!(customs.len(), 2);
    let (cleanup, fallback) = (customs[0], customs[1]);
    assert_eq!(cleanup.attr("After"), "StopServices", "after devnetd has stopped and undone its sessions");
    assert_eq!(fallback.attr("After"), cleanup.attr("Action"), "the fallback after cleanup");

    let mut commands = Vec::new();
    for custom in [cleanup, fallback] {
        let id = custom.attr("Action");
        let condition = custom.attr("Condition");
        assert!(condition.starts_with("REMOVE~=\"ALL\""), "{id} on uninstall only: {condition}");
        let action = package.one("CustomAction", "Id", id);
        assert_eq!(action.attr("Execute"), "deferred", "{id}");
        assert_eq!(action.attr("Impersonate"), "no", "{id} runs as LocalSystem");
        assert_eq!(action.attr("DllEntry"), "WixQuietExec", "{id}");
        assert_eq!(action.attr("BinaryRef"), "Wix4UtilCA_$(sys.BUILDARCHSHORT)", "{id}");
        assert_eq!(action.attr("Return"), "ignore", "{id} never blocks an uninstall");
        // A deferred action's command line is the property of its own name.
        let data = package.one("SetProperty", "Id", id);
        assert_eq!(data.attr("Before"), id);
        assert_eq!(data.attr("Sequence"), "execute");
        assert_eq!(data.attr("Condition"), condition);
        commands.push(split_command_line(data.attr("Value")));
    }

    // 1. The installed CLI's real cleanup, on the service's journals.
    let cli = &commands[0];
    assert_eq!(cli[0], "[INSTALLFOLDER]devnet.exe");
    assert!(files_by_name(&package).contains_key("devnet.exe"));
    assert_eq!(cli[1], "cleanup");
    let values = flag_values(&cli[2..], &cleanup_flags(), "the MSI's devnet cleanup");
    assert_eq!(values["--daemon-state-dir"], service_flags(&package)["--state-dir"], "the journals devnetd writes");

    // 2. PowerShell, filtering on exactly devnet-dns's comment.
    let ps = &commands[1];
    // Windows' own PowerShell by its full path: no PATH lookup as LocalSystem.
    assert_eq!(ps[0], r"[System64Folder]WindowsPowerShell\v1.0\powershell.exe");
    let script = &ps[ps.iter().position(|a| a == "-Command").expect("-Command") + 1];
    assert_eq!(ps.last(), Some(script), "the script is the last argument");
    let stages: Vec<&str> = script.split('|').map(str::trim).collect();
    let comment = devnet_dns::windows::COMMENT;
    assert_eq!(
        stages,
        [
            "Get-DnsClientNrptRule".to_owned(),
            format!("Where-Object Comment -eq '{comment}'"),
            "Remove-DnsClientNrptRule -Force".to_owned()
        ]
    );
    // The same cmdlet devnet-dns removes its rules with, and the comment it adds them with.
    let stub: std::net::IpAddr = "127.0.0.153".parse().expect("ip");
    assert!(devnet_dns::windows::add_rule("demo", stub).concat().contains(&format!("-Comment '{comment}'")));
    assert!(devnet_dns::windows::remove_rule("{0}").last().expect("script").starts_with("Remove-DnsClientNrptRule "));
    // MSI formats property values: brackets and braces would be read as properties.
    assert!(!script.contains(['[', ']', '{', '}']), "{script}");
}

#[test]
fn build_msi_defines_every_wix_variable_and_builds_every_file() {
    let wxs = read(WXS);
    let build = read(BUILD_MSI);
    let used: BTreeSet<&str> =
        wxs.split("$(var.").skip(1).map(|rest| rest.split(')').next().expect("a name")).collect();
    let defined: BTreeSet<&str> =
        build.split("-d \"").skip(1).map(|rest| rest.split('=').next().expect("a name")).collect();
    assert_eq!(used, defined, "the -d variables build-msi.ps1 passes to wix build");
    assert!(build.contains("-ext WixToolset.Util.wixext"), "WixQuietExec and util:ServiceConfig come from it");
    assert!(build.contains(r#"-d "BinDir=target\release""#));

    // Each File is a binary of a package build-msi.ps1 builds.
    let packages: Vec<&str> = build
        .lines()
        .find(|l| l.contains("cargo build --release"))
        .expect("cargo build")
        .split(" -p ")
        .skip(1)
        .map(|p| p.split_whitespace().next().expect("a package"))
        .collect();
    let manifests = [("devnetd", "crates/devnetd"), ("devnet-cli", "crates/devnet-cli"), ("devnet-tray", "src-tauri")];
    let mut bins = BTreeSet::new();
    for package in &packages {
        let dir = manifests.iter().find(|(p, _)| p == package).map(|(_, d)| *d).expect("a known package");
        let manifest = read(&format!("{dir}/Cargo.toml"));
        let bin = manifest.split("[[bin]]").nth(1).and_then(|b| b.lines().find_map(|l| l.strip_prefix("name = ")));
        bins.insert(format!("{}.exe", bin.unwrap_or(package).trim_matches('"')));
    }
    let package = package();
    for file in package.all("File") {
        let source = file.attr("Source");
        let name = source.strip_prefix(r"$(var.BinDir)\").expect("from BinDir");
        assert!(bins.contains(name), "{name} is built by build-msi.ps1 ({bins:?})");
    }
}
