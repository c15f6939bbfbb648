//! The documentation stands alone: every link in every tracked Markdown
//! file resolves to a file of the repository (and to a heading, where it
//! names one), and every repository path cited in code, comments, protos,
//! scripts and manifests exists. Web links are not fetched (CI is offline);
//! links to `file://` or absolute machine paths are refused outright.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files git tracks (plus untracked, not ignored ones), relative to the root.
fn tracked_files() -> Vec<PathBuf> {
    let out = Command::new("git")
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .current_dir(repo_root())
        .output()
        .expect("git ls-files runs");
    assert!(out.status.success(), "git ls-files failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .filter(|p| repo_root().join(p).exists())
        .collect()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// as hyphens; repeated headings get `-1`, `-2`, ...
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut heading: Option<String> = None;
    for event in Parser::new_ext(markdown, Options::all()) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some(h) = heading.take() {
                    let slug: String = h
                        .trim()
                        .to_lowercase()
                        .chars()
                        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                        .map(|c| if c == ' ' { '-' } else { c })
                        .collect();
                    let n = seen.entry(slug.clone()).or_insert(0);
                    out.insert(if *n == 0 {
                        slug.clone()
                    } else {
                        format!("{slug}-{n}")
                    });
                    *n += 1;
                }
            }
            Event::Html(html) | Event::InlineHtml(html) => {
                // <a id="..."> / <a name="..."> anchors.
                for attr in ["id=\"", "name=\""] {
                    if let Some(start) = html.find(attr) {
                        let rest = &html[start + attr.len()..];
                        if let Some(end) = rest.find('"') {
                            out.insert(rest[..end].to_string());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Every link and image destination of a Markdown text.
fn links(markdown: &str) -> Vec<String> {
    Parser::new_ext(markdown, Options::all())
        .filter_map(|event| match event {
            Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. }) => Some(dest_url.to_string()),
            _ => None,
        })
        .collect()
}

/// Why `dest`, linked from `from` (a Markdown file relative to the root),
/// does not resolve; `None` if it does.
fn broken(from: &Path, dest: &str) -> Option<String> {
    if dest.starts_with("http://") || dest.starts_with("https://") || dest.starts_with("mailto:") {
        return None;
    }
    if dest.starts_with("file:") || dest.starts_with('/') {
        return Some("an absolute machine path: readers have the repository only".into());
    }
    let (path, anchor) = match dest.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (dest, None),
    };
    let target = if path.is_empty() {
        from.to_path_buf()
    } else {
        from.parent().unwrap_or(Path::new("")).join(path)
    };
    let full = repo_root().join(&target);
    if !full.exists() {
        return Some(format!("no such file `{}`", target.display()));
    }
    let outside = full
        .canonicalize()
        .map(|p| !p.starts_with(repo_root().canonicalize().unwrap_or_default()))
        .unwrap_or(true);
    if outside {
        return Some("a path outside the repository".into());
    }
    match anchor {
        Some(anchor) if full.extension().is_some_and(|e| e == "md") => {
            let text = std::fs::read_to_string(&full).unwrap_or_default();
            (!anchors(&text).contains(anchor))
                .then(|| format!("no heading `#{anchor}` in `{}`", target.display()))
        }
        _ => None,
    }
}

#[test]
fn every_markdown_link_resolves_inside_the_repository() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in tracked_files()
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(repo_root().join(&file)).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            // A path of the machine the docs were written on means nothing to readers.
            if ["/work/", "/root/", "/home/"]
                .iter()
                .any(|p| line.contains(p))
            {
                problems.push(format!(
                    "{}:{}: an absolute machine path",
                    file.display(),
                    n + 1
                ));
            }
        }
        for dest in links(&text) {
            checked += 1;
            if let Some(why) = broken(&file, &dest) {
                problems.push(format!("{}: link `{dest}`: {why}", file.display()));
            }
        }
    }
    assert!(
        checked > 10,
        "only {checked} links found: is the parser seeing the docs?"
    );
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

/// Top-level folders of this repository whose paths the code cites.
const TOP_LEVEL: [&str; 11] = [
    "docs/",
    "src/",
    "sidecar/",
    "tests/",
    "cluster/",
    "bench/",
    "proto/",
    "python-client/",
    "anna-client/",
    "scripts/",
    ".ci/",
];

/// Paths the docs cite that are not in the repository by design: files a
/// reader creates (secrets, outputs), named where the docs say how to make them.
const CREATED_BY_THE_READER: [&str; 3] = [
    // `aft-sidecar --generate-peer-key > …` (cluster/README.md), gitignored.
    "cluster/k8s/base/peer.key",
    // The Redis password file the redis overlay reads, gitignored.
    "cluster/k8s/overlays/redis/redis-auth.env",
    // Written by `aft-bench --quick`.
    "bench/results/quick.json",
];

/// Whether `path`, cited in `file`, names a file of the repository: from the
/// root, or from a folder holding `file` (a crate's README or manifest
/// cites its own `src/…`).
fn exists_from(file: &Path, path: &str) -> bool {
    file.ancestors()
        .skip(1)
        .any(|dir| repo_root().join(dir).join(path).exists())
}

/// Repository paths cited in a text: a known top-level folder followed by
/// path characters, ending in a file name with an extension or a `/`.
fn cited_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    for top in TOP_LEVEL {
        let mut from = 0;
        while let Some(pos) = text[from..].find(top) {
            let start = from + pos;
            from = start + top.len();
            let before = start.checked_sub(1).map(|i| bytes[i]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b"/._-$~".contains(&b)) {
                continue;
            }
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || "/._-".contains(c)))
                .map_or(text.len(), |n| start + n);
            let path = text[start..end].trim_end_matches('.');
            let has_file = path
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains('.') && !last.ends_with('.'));
            if has_file && !path.contains('*') {
                out.push(path.to_string());
            }
        }
    }
    out
}

/// Markdown file names cited bare (`ARCHITECTURE.md`, not `docs/…`): an
/// upper-case name, not part of a longer path.
fn cited_doc_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find(".md") {
        let end = from + pos + 3;
        from = end;
        if text[end..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let start = text[..end - 3]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .map_or(0, |i| i + 1);
        let name = &text[start..end];
        let before = text[..start].chars().last();
        if before == Some('/') || !name.starts_with(|c: char| c.is_ascii_uppercase()) {
            continue;
        }
        if name.len() > 3 {
            out.push(name.to_string());
        }
    }
    out
}

#[test]
fn every_repository_path_cited_in_code_and_docs_exists() {
    let cited_in = |f: &Path| {
        f.extension().is_some_and(|e| {
            [
                "rs", "proto", "py", "sh", "toml", "yaml", "yml", "md", "pyi",
            ]
            .contains(&e.to_str().unwrap_or(""))
        }) || f
            .file_name()
            .is_some_and(|n| n == "Dockerfile" || n == "run")
    };
    let files = tracked_files();
    let markdown_names: BTreeSet<String> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "md"))
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let mut problems = BTreeSet::new();
    let mut checked = 0;
    // This file names missing paths on purpose, to test the checks.
    let this_file = Path::new(file!());
    for file in files
        .iter()
        .filter(|f| cited_in(f) && f.as_path() != this_file)
    {
        let Ok(text) = std::fs::read_to_string(repo_root().join(file)) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            for name in cited_doc_names(line) {
                checked += 1;
                if !markdown_names.contains(&name) {
                    problems.insert(format!(
                        "{}:{}: `{name}` is no Markdown file of the repository",
                        file.display(),
                        n + 1
                    ));
                }
            }
            for path in cited_paths(line) {
                checked += 1;
                if CREATED_BY_THE_READER.contains(&path.as_str()) || exists_from(file, &path) {
                    continue;
                }
                problems.insert(format!(
                    "{}:{}: `{path}` does not exist",
                    file.display(),
                    n + 1
                ));
            }
        }
    }
    assert!(checked > 50, "only {checked} paths found");
    assert!(
        problems.is_empty(),
        "paths cited that are not in the repository:\n{}",
        problems.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_checks_catch_what_they_are_for() {
    assert!(broken(Path::new("docs/CONFIG.md"), "OPERATIONS.md").is_none());
    assert!(broken(Path::new("docs/CONFIG.md"), "NOPE.md").is_some());
    assert!(broken(Path::new("docs/CONFIG.md"), "../README.md").is_none());
    // Missing names are built at run time, so no scanner takes them for citations.
    let missing = ["NO", "SUCH.md"].concat();
    let outside = format!("../../elsewhere/{missing}");
    assert!(broken(Path::new("docs/CONFIG.md"), &outside).is_some());
    assert!(broken(Path::new("docs/CONFIG.md"), "/work/x.md").is_some());
    assert!(broken(Path::new("docs/CONFIG.md"), "#reference").is_none());
    assert!(broken(Path::new("docs/CONFIG.md"), "#no-such-heading").is_some());
    assert_eq!(
        cited_paths("see docs/PROTOCOL.md, and `src/txn/record.rs`."),
        ["docs/PROTOCOL.md", "src/txn/record.rs"]
    );
    assert!(cited_paths("a/src/x.rs or src/ alone").is_empty());
    assert_eq!(
        cited_doc_names(&format!(
            "see {missing} and docs/{missing}, not readme.md or X.mdx"
        )),
        std::slice::from_ref(&missing)
    );
    let md = "# Top\n## A `b` c!\n## A `b` c!\n<a id=\"x\"></a>\n";
    let a = anchors(md);
    assert!(a.contains("top") && a.contains("a-b-c") && a.contains("a-b-c-1") && a.contains("x"));
}
