//! docs/CONFIG.md against the real binary, and the configuration sources as
//! an operator sees them.
//!
//! - Every flag and `AFT_*` variable of `aft-sidecar --help` has its row in
//!   the reference table of docs/CONFIG.md (with the same variable, and the
//!   flag's name with underscores as TOML key); every flag and variable named
//!   anywhere on that page exists; the TOML keys of the table are exactly
//!   those the binary accepts. So adding, renaming or removing a setting
//!   without updating the page fails here.
//! - A TOML file given with `--config` (or `AFT_CONFIG`) is honoured, flags
//!   beat variables beat the file beat the defaults, and a bad file stops the
//!   sidecar with exit code 2 and a message naming the file.
//! - Every `aft_*` metric named in docs/OPERATIONS.md is one the code registers.
//!
//! The sidecar is only ever run until its configuration is resolved: each run
//! ends in a configuration error (exit 2) or in opening a storage URL that
//! cannot be opened (exit 1, the URL named in the message), which is how a
//! test observes which value won without starting a server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aft_testkit::process::StartError;
use aft_testkit::sidecar::{launch, SidecarSpec};

const BIN: &str = env!("CARGO_BIN_EXE_aft-sidecar");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("sidecar/ has a parent")
        .to_path_buf()
}

fn read_doc(name: &str) -> String {
    let path = repo_root().join("docs").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// running the binary

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the sidecar with `args` and exactly the `AFT_*` variables in `env`
/// (inherited ones are removed); kills it and fails if it has not exited
/// within 30 s.
fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    for (key, _) in std::env::vars() {
        if key.starts_with("AFT_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("cannot start aft-sidecar");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("aft-sidecar {args:?} did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(&out_path).unwrap(),
        stderr: std::fs::read_to_string(&err_path).unwrap(),
    }
}

/// A config file in its own temporary directory.
struct ConfigFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aft.toml");
        std::fs::write(&path, text).unwrap();
        ConfigFile { _dir: dir, path }
    }

    fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

/// Asserts the run resolved its configuration and then failed on the storage
/// URL `url` (so `url` is the storage setting that won).
fn assert_storage_used(r: &Run, url: &str, what: &str) {
    assert_eq!(
        r.code, 1,
        "{what}: expected exit 1 (storage error), got {}; stderr:\n{}",
        r.code, r.stderr
    );
    assert!(
        r.stderr.contains(&format!("storage `{url}`")),
        "{what}: expected the storage URL `{url}` to be used; stderr:\n{}",
        r.stderr
    );
}

fn assert_config_error(r: &Run, needle: &str, what: &str) {
    assert_eq!(
        r.code, 2,
        "{what}: expected exit 2 (configuration error), got {}; stderr:\n{}",
        r.code, r.stderr
    );
    assert!(
        r.stderr.contains(needle),
        "{what}: expected `{needle}` in stderr:\n{}",
        r.stderr
    );
}

// ---------------------------------------------------------------------------
// --help

/// `(flag, variable)` for every option of `--help`, in order.
fn help_options() -> Vec<(String, Option<String>)> {
    let r = run(&["--help"], &[]);
    assert_eq!(r.code, 0, "--help failed: {}", r.stderr);
    let mut options: Vec<(String, String)> = Vec::new(); // (flag, text of its entry)
    for line in r.stdout.lines() {
        let trimmed = line.trim_start();
        let starts_option = trimmed.starts_with("--")
            || (trimmed.starts_with('-') && trimmed.get(2..4) == Some(", "));
        if starts_option && line.len() - trimmed.len() <= 6 {
            let flag = trimmed
                .split([' ', ','])
                .map(str::trim)
                .find(|w| w.starts_with("--"))
                .expect("an option line names a long flag")
                .to_string();
            options.push((flag, line.to_string()));
        } else if let Some(last) = options.last_mut() {
            last.1.push(' ');
            last.1.push_str(trimmed);
        }
    }
    assert!(options.len() > 10, "could not parse --help:\n{}", r.stdout);
    options
        .into_iter()
        .map(|(flag, text)| {
            let env = text
                .split("[env: ")
                .nth(1)
                .map(|rest| rest.split(['=', ']']).next().unwrap().to_string());
            (flag, env)
        })
        .collect()
}

/// Flags printed by clap itself, documented in prose rather than the table.
const BUILTIN: [&str; 2] = ["--help", "--version"];

// ---------------------------------------------------------------------------
// docs/CONFIG.md

#[derive(Debug)]
struct Row {
    flag: String,
    env: Option<String>,
    toml_key: Option<String>,
}

/// Where the section between the lines `<!-- NAME:begin -->` and
/// `<!-- NAME:end -->` starts and ends (markers quoted in prose don't count).
fn section(doc: &str, name: &str) -> Option<(usize, usize)> {
    let begin = format!("\n<!-- {name}:begin -->\n");
    let end = format!("\n<!-- {name}:end -->");
    let start = doc.find(&begin)? + begin.len();
    let stop = start + doc[start..].find(&end).expect("section end marker");
    Some((start, stop))
}

/// Rows of the table in section `name`.
fn table(doc: &str, name: &str) -> Option<Vec<Row>> {
    let (start, stop) = section(doc, name)?;
    let rows = doc[start..stop]
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            if cells.len() < 5 || !cells[0].starts_with("`--") {
                return None;
            }
            let code = |cell: &str| -> Option<String> {
                let inner = cell.strip_prefix('`')?.split('`').next()?;
                Some(inner.to_string())
            };
            let flag = code(cells[0])?.split(' ').next()?.to_string();
            Some(Row {
                flag,
                env: code(cells[1]),
                toml_key: code(cells[2]),
            })
        })
        .collect();
    Some(rows)
}

/// Every token `--name` or `AFT_NAME` on the page (outside the planned table).
fn mentioned(doc: &str, prefix: &str) -> BTreeSet<String> {
    let mut doc = doc.to_string();
    if let Some((a, b)) = section(&doc, "config-planned") {
        doc.replace_range(a..b, "");
    }
    let mut found = BTreeSet::new();
    let bytes = doc.as_bytes();
    let mut i = 0;
    while let Some(pos) = doc[i..].find(prefix) {
        let start = i + pos;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start + prefix.len();
        while end < bytes.len()
            && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'-' || bytes[end] == b'_')
        {
            end += 1;
        }
        let token = doc[start..end].trim_end_matches(['-', '_']).to_string();
        if before_ok && token.len() > prefix.len() {
            found.insert(token);
        }
        i = end.max(start + 1);
    }
    found
}

#[test]
fn every_flag_and_variable_of_help_is_in_the_reference_table() {
    let doc = read_doc("CONFIG.md");
    let rows = table(&doc, "config-reference").expect("docs/CONFIG.md has the reference table");
    let by_flag: BTreeMap<&str, &Row> = rows.iter().map(|r| (r.flag.as_str(), r)).collect();
    let mut problems = Vec::new();
    for (flag, env) in help_options() {
        if BUILTIN.contains(&flag.as_str()) {
            continue;
        }
        let Some(row) = by_flag.get(flag.as_str()) else {
            problems.push(format!("{flag} (from --help) has no row in docs/CONFIG.md"));
            continue;
        };
        if row.env != env {
            problems.push(format!(
                "{flag}: --help says variable {env:?}, docs/CONFIG.md says {:?}",
                row.env
            ));
        }
        // Settings (flags with a variable) have a TOML key: the flag's name
        // with underscores; `--config` and actions such as
        // `--generate-curve-keys` have none.
        let expected_key = (env.is_some() && flag != "--config")
            .then(|| flag.trim_start_matches("--").replace('-', "_"));
        if row.toml_key != expected_key {
            problems.push(format!(
                "{flag}: docs/CONFIG.md gives TOML key {:?}, expected {expected_key:?}",
                row.toml_key
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/CONFIG.md is out of date:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_flag_and_variable_on_the_page_exists() {
    let doc = read_doc("CONFIG.md");
    let options = help_options();
    let flags: BTreeSet<String> = options.iter().map(|(f, _)| f.clone()).collect();
    let envs: BTreeSet<String> = options.iter().filter_map(|(_, e)| e.clone()).collect();
    let planned = table(&doc, "config-planned").unwrap_or_default();
    let mut problems = Vec::new();
    for row in table(&doc, "config-reference").unwrap() {
        if !flags.contains(&row.flag) {
            problems.push(format!(
                "{} is in the reference table but not in --help",
                row.flag
            ));
        }
    }
    for flag in mentioned(&doc, "--") {
        if !flags.contains(&flag) {
            problems.push(format!("{flag} is named on the page but not in --help"));
        }
    }
    for env in mentioned(&doc, "AFT_") {
        if !envs.contains(&env) {
            problems.push(format!(
                "{env} is named on the page but is no variable of --help"
            ));
        }
    }
    for row in &planned {
        if flags.contains(&row.flag) {
            problems.push(format!(
                "{} is listed as planned but the binary has it now: move its row into the \
                 reference table (with the variable and default the binary really uses)",
                row.flag
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/CONFIG.md is out of date:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn toml_keys_in_the_table_are_exactly_those_the_binary_accepts() {
    // serde's unknown-field error lists every accepted key.
    let file = ConfigFile::new("__list_the_keys__ = 1\n");
    let r = run(&["--config", file.arg()], &[]);
    assert_config_error(&r, "unknown field `__list_the_keys__`", "unknown key");
    let list = r
        .stderr
        .split("expected one of ")
        .nth(1)
        .unwrap_or_else(|| panic!("no key list in: {}", r.stderr));
    let accepted: BTreeSet<String> = list
        .lines()
        .next()
        .unwrap()
        .split(", ")
        .map(|k| k.trim().trim_matches('`').to_string())
        .collect();
    let doc = read_doc("CONFIG.md");
    let documented: BTreeSet<String> = table(&doc, "config-reference")
        .unwrap()
        .into_iter()
        .filter_map(|r| r.toml_key)
        .collect();
    assert_eq!(
        documented, accepted,
        "TOML keys: left = docs/CONFIG.md, right = accepted by the binary"
    );
}

// ---------------------------------------------------------------------------
// the config file and precedence

#[test]
fn config_file_is_honoured() {
    let file = ConfigFile::new("storage = \"from-file://x\"\n");
    let r = run(&["--config", file.arg()], &[]);
    assert_storage_used(&r, "from-file://x", "storage from --config file");

    let r = run(&[], &[("AFT_CONFIG", file.arg())]);
    assert_storage_used(&r, "from-file://x", "storage from AFT_CONFIG file");

    // A non-storage key is applied too: an invalid value in the file stops
    // the start with that value named.
    let file = ConfigFile::new("storage = \"from-file://x\"\nlog_format = \"bogus-format\"\n");
    let r = run(&["--config", file.arg()], &[]);
    assert_config_error(
        &r,
        "unknown log format `bogus-format`",
        "log_format from the file",
    );

    // The default storage URL is derived from data_dir, also from the file.
    let file = ConfigFile::new("data_dir = \"/proc/aft-config-test\"\n");
    let r = run(&["--config", file.arg(), "--metrics-addr", "off"], &[]);
    assert_storage_used(
        &r,
        "file:///proc/aft-config-test",
        "storage derived from data_dir",
    );
}

#[test]
fn flags_beat_variables_beat_the_file() {
    let file = ConfigFile::new("storage = \"from-file://x\"\n");
    let env = [("AFT_STORAGE", "from-env://x")];

    let r = run(&["--config", file.arg()], &env);
    assert_storage_used(&r, "from-env://x", "variable over file");

    let r = run(
        &["--config", file.arg(), "--storage", "from-flag://x"],
        &env,
    );
    assert_storage_used(&r, "from-flag://x", "flag over variable and file");

    let r = run(&["--storage", "from-flag://x"], &env);
    assert_storage_used(&r, "from-flag://x", "flag over variable");

    // --config beats AFT_CONFIG.
    let other = ConfigFile::new("storage = \"from-other-file://x\"\n");
    let r = run(&["--config", other.arg()], &[("AFT_CONFIG", file.arg())]);
    assert_storage_used(&r, "from-other-file://x", "--config over AFT_CONFIG");

    // The same order for a setting checked before storage: the winning value
    // decides whether the start fails on the log format.
    let file = ConfigFile::new("storage = \"from-file://x\"\nlog_format = \"bogus-file\"\n");
    let r = run(&["--config", file.arg()], &[("AFT_LOG_FORMAT", "json")]);
    assert_storage_used(
        &r,
        "from-file://x",
        "valid variable over invalid file value",
    );
    let r = run(
        &["--config", file.arg()],
        &[("AFT_LOG_FORMAT", "bogus-env")],
    );
    assert_config_error(&r, "`bogus-env`", "variable over file");
    let r = run(
        &["--config", file.arg(), "--log-format", "text"],
        &[("AFT_LOG_FORMAT", "bogus-env")],
    );
    assert_storage_used(
        &r,
        "from-file://x",
        "valid flag over invalid variable and file",
    );
    let r = run(
        &["--config", file.arg(), "--log-format", "bogus-flag"],
        &[("AFT_LOG_FORMAT", "json")],
    );
    assert_config_error(&r, "`bogus-flag`", "flag over variable");

    // And for the socket mode.
    let file = ConfigFile::new("storage = \"from-file://x\"\nsocket_mode = \"999\"\n");
    let r = run(&["--config", file.arg()], &[]);
    assert_config_error(&r, "invalid socket mode `999`", "socket_mode from the file");
    let r = run(&["--config", file.arg()], &[("AFT_SOCKET_MODE", "640")]);
    assert_storage_used(&r, "from-file://x", "socket mode variable over file");
}

#[test]
fn a_bad_config_file_stops_the_start_naming_the_file() {
    let cases = [
        ("no_such_setting = 1\n", "unknown field `no_such_setting`"),
        ("cache_bytes = \"256MiB\"\n", "invalid type"),
        ("allow_tcp_replies = \"yes\"\n", "invalid type"),
        ("storage = \n", "TOML parse error"),
    ];
    for (text, needle) in cases {
        let file = ConfigFile::new(text);
        let r = run(&["--config", file.arg(), "--storage", "from-flag://x"], &[]);
        assert_config_error(&r, needle, text);
        assert_config_error(
            &r,
            &format!("invalid config file `{}`", file.arg()),
            "the message names the file",
        );
    }
    let missing = "/nonexistent/aft-config-test.toml";
    let r = run(&["--config", missing], &[]);
    assert_config_error(
        &r,
        &format!("cannot read config file `{missing}`"),
        "missing config file",
    );
}

#[test]
fn boolean_variables_take_true_or_false_only() {
    let r = run(
        &["--storage", "from-flag://x"],
        &[("AFT_ALLOW_TCP_REPLIES", "false")],
    );
    assert_storage_used(&r, "from-flag://x", "AFT_ALLOW_TCP_REPLIES=false");
    let r = run(
        &["--storage", "from-flag://x"],
        &[("AFT_ALLOW_TCP_REPLIES", "yes")],
    );
    assert_config_error(&r, "invalid value 'yes'", "AFT_ALLOW_TCP_REPLIES=yes");
    assert!(r.stdout.is_empty());
}

// ---------------------------------------------------------------------------
// settings that would be silently ignored, and sidecars sharing a host

#[test]
fn peer_settings_while_the_peer_layer_is_off_stop_the_start() {
    let r = run(&["--storage", "from-flag://x", "--peers", "10.0.0.5"], &[]);
    assert_config_error(&r, "--peers given, but the peer layer is off", "--peers");
    assert_config_error(&r, "--peer-mode plaintext", "the message names the fix");
    assert_config_error(&r, "--peer-mode sealed", "the message names the fix");

    let r = run(
        &["--storage", "from-flag://x"],
        &[
            ("AFT_PEER_DISCOVERY_DNS", "peers.example"),
            ("AFT_PEER_PORT", "7000"),
        ],
    );
    assert_config_error(
        &r,
        "--peer-discovery-dns, --peer-port given",
        "settings from the environment",
    );

    let file = ConfigFile::new("peers = \"10.0.0.5\"\npeer_timeout_ms = 100\n");
    let r = run(&["--config", file.arg(), "--storage", "from-flag://x"], &[]);
    assert_config_error(
        &r,
        "--peers, --peer-timeout-ms given",
        "settings from the file",
    );

    // With the layer on, the same settings are taken.
    let r = run(
        &[
            "--storage",
            "from-flag://x",
            "--peer-mode",
            "plaintext",
            "--peers",
            "10.0.0.5",
            "--metrics-addr",
            "off",
        ],
        &[],
    );
    assert_storage_used(&r, "from-flag://x", "--peers with --peer-mode plaintext");
}

#[test]
fn a_key_file_without_sealed_mode_and_a_data_dir_beside_storage_stop_the_start() {
    let r = run(
        &[
            "--storage",
            "from-flag://x",
            "--peer-mode",
            "plaintext",
            "--peer-key-file",
            "/nonexistent/peer.key",
        ],
        &[],
    );
    assert_config_error(
        &r,
        "--peer-key-file is used only with --peer-mode sealed",
        "key file with plaintext",
    );
    let r = run(&["--storage", "from-flag://x", "--data-dir", "/tmp/x"], &[]);
    assert_config_error(
        &r,
        "--data-dir `/tmp/x` is used only by the embedded store",
        "--data-dir beside --storage",
    );
}

#[test]
fn the_grpc_front_never_starts_without_a_chosen_authentication() {
    let r = run(
        &["--storage", "from-flag://x", "--grpc-addr", "127.0.0.1:0"],
        &[],
    );
    assert_config_error(
        &r,
        "the gRPC front needs authentication",
        "no token, no mTLS",
    );
    assert_config_error(&r, "--grpc-insecure", "the message names the opt-out");
    let r = run(&["--storage", "from-flag://x", "--grpc-insecure"], &[]);
    assert_config_error(
        &r,
        "--grpc-insecure given, but the gRPC front is off",
        "no address",
    );
    let r = run(
        &[
            "--storage",
            "from-flag://x",
            "--grpc-addr",
            "127.0.0.1:0",
            "--grpc-tls-cert",
            "/nonexistent/cert.pem",
            "--grpc-insecure",
        ],
        &[],
    );
    assert_config_error(
        &r,
        "--grpc-tls-cert and --grpc-tls-key go together",
        "half TLS",
    );
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.token");
    std::fs::write(&short, "too-short\n").unwrap();
    let r = run(
        &[
            "--storage",
            "from-flag://x",
            "--grpc-addr",
            "127.0.0.1:0",
            "--grpc-token-file",
            short.to_str().unwrap(),
        ],
        &[],
    );
    assert_config_error(&r, "at least 16 printable ASCII characters", "short token");
    let r = run(
        &[
            "--storage",
            "from-flag://x",
            "--grpc-addr",
            "127.0.0.1:0",
            "--grpc-insecure",
            "--metrics-addr",
            "off",
        ],
        &[],
    );
    assert_storage_used(
        &r,
        "from-flag://x",
        "an explicit --grpc-insecure is accepted",
    );
}

/// A sidecar on `memory://` with node address `address`, logging at info.
fn on_address(dir: &Path, address: &str) -> SidecarSpec {
    SidecarSpec::new(Path::new(BIN), &dir.join(address))
        .args(&["--storage", "memory://", "--node-address", address])
        .envs(&[("AFT_LOG", "info")])
}

#[test]
fn sidecars_of_different_node_addresses_share_a_host_and_a_clash_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let a = launch(&on_address(dir.path(), "127.0.0.91"))
        .unwrap_or_else(|e| panic!("first sidecar: {e}"));
    let b = launch(&on_address(dir.path(), "127.0.0.92"))
        .unwrap_or_else(|e| panic!("second sidecar: {e}"));
    assert_eq!(a.metrics_addr(), Some("127.0.0.91:9464".parse().unwrap()));
    assert_eq!(b.metrics_addr(), Some("127.0.0.92:9464".parse().unwrap()));

    let clash = launch(&on_address(dir.path(), "127.0.0.92"))
        .expect_err("a third on the same address must stop");
    let StartError::NotReady { status, log, .. } = clash else {
        panic!("the third sidecar did not run: {clash}");
    };
    assert_eq!(status, "exit status: 1", "{log}");
    assert!(
        log.contains("cannot bind the metrics address `127.0.0.92:9464` (--metrics-addr)"),
        "the message names the address and the flag:\n{log}"
    );

    // Logs written to a file carry no terminal colour codes.
    for log in [a.log(), b.log(), log] {
        assert!(log.contains("INFO"), "no log lines:\n{log}");
        assert!(!log.contains('\x1b'), "ANSI escape in a log file:\n{log}");
    }
}

// ---------------------------------------------------------------------------
// docs/OPERATIONS.md

/// Metric names registered in the core library's sources (`registry.register("name", ...)`).
fn registered_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut stack = vec![repo_root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for part in text.split(".register(").skip(1) {
                    let part = part.trim_start();
                    if let Some(rest) = part.strip_prefix('"') {
                        if let Some(name) = rest.split('"').next() {
                            names.insert(format!("aft_{name}"));
                        }
                    }
                }
            }
        }
    }
    names
}

#[test]
fn metrics_named_in_operations_md_exist() {
    let registered = registered_metrics();
    assert!(
        registered.contains("aft_txn_committed"),
        "could not find the metric registrations in src/: {registered:?}"
    );
    let doc = read_doc("OPERATIONS.md");
    let suffixes = ["", "_total", "_bucket", "_sum", "_count"];
    let unknown: Vec<String> = mentioned(&doc, "aft_")
        .into_iter()
        .filter(|name| {
            !suffixes.iter().any(|s| {
                name.strip_suffix(s)
                    .is_some_and(|base| registered.contains(base))
            })
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/OPERATIONS.md names metrics the code does not register: {unknown:?} \
         (registered: {registered:?})"
    );
}
