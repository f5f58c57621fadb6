//! The IdP's top-level modules depend one way (`idp/src/lib.rs` lists the layers). These tests
//! read `idp/src`, take every path into the crate outside `#[cfg(test)]` items (`use crate::…`,
//! grouped `use crate::{a, b::c}`, `super::…` that leaves a top-level module, and paths written
//! in code such as `crate::audit::record(…)`), build the graph of top-level modules, and fail
//! on a cycle, printing it, or on an import that reaches up the layer order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The crate root (`lib.rs`): `crate::app` names an item of the root, not a module.
const ROOT: &str = "crate";

/// Bottom to top: a module may use only modules before it. A new top-level module must be
/// placed here.
const LAYERS: &[&str] = &[
    "clock",
    "keys",
    "tls",
    "metrics",
    "error",
    "crypto",
    "store",
    "config",
    "metadata",
    "state",
    "http",
    "audit",
    "bootstrap",
    "accounts",
    "admin",
    "token",
    "oidc",
    "web",
    "ops",
    "routes",
    ROOT,
    "server",
    "testing",
    "cli",
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

/// Rust source as identifiers, `::` and punctuation; comments, strings, chars and lifetimes
/// dropped (a path inside a comment or a string is not a dependency).
fn tokens(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_string = |mut j: usize| -> usize {
        // `c[j]` is the opening quote.
        j += 1;
        while j < c.len() && c[j] != '"' {
            j += if c[j] == '\\' { 2 } else { 1 };
        }
        j + 1
    };
    let skip_raw_string = |mut j: usize| -> Option<usize> {
        // `c[j]` is `r`; `r#*"` … `"#*`.
        j += 1;
        let mut hashes = 0;
        while j < c.len() && c[j] == '#' {
            hashes += 1;
            j += 1;
        }
        if j >= c.len() || c[j] != '"' {
            return None;
        }
        j += 1;
        loop {
            if j >= c.len() {
                return Some(j);
            }
            if c[j] == '"' && (1..=hashes).all(|h| c.get(j + h) == Some(&'#')) {
                return Some(j + 1 + hashes);
            }
            j += 1;
        }
    };
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            loop {
                if i >= c.len() {
                    break;
                }
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(i);
        } else if ch == '\'' {
            // A char literal ('x', '\n', '\'', '"') or a lifetime ('a).
            if c.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            }
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(Tok::PathSep);
            i += 2;
        } else if ch.is_alphanumeric() || ch == '_' {
            if matches!(ch, 'r' | 'b') {
                let r = if ch == 'b' && c.get(i + 1) == Some(&'r') {
                    i + 1
                } else {
                    i
                };
                if c[r] == 'r' {
                    if let Some(end) = skip_raw_string(r) {
                        i = end;
                        continue;
                    }
                }
                if ch == 'b' && c.get(i + 1) == Some(&'"') {
                    i = skip_string(i + 1);
                    continue;
                }
                if ch == 'b' && c.get(i + 1) == Some(&'\'') {
                    i += 1;
                    continue;
                }
            }
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else {
            out.push(Tok::Punct(ch));
            i += 1;
        }
    }
    out
}

fn ident(t: Option<&Tok>) -> Option<&str> {
    match t {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

/// The index just past the bracketed group that opens at `i` (`(`, `[` or `{`).
fn past_group(t: &[Tok], i: usize) -> usize {
    let mut depth = 0i32;
    let mut j = i;
    while j < t.len() {
        match t[j] {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

/// Whether an attribute `#[…]` or `#![…]` starting at `i` is `cfg(test)`; returns where it ends.
fn attribute(t: &[Tok], i: usize) -> Option<(usize, bool)> {
    if t.get(i) != Some(&Tok::Punct('#')) {
        return None;
    }
    let open = if t.get(i + 1) == Some(&Tok::Punct('!')) {
        i + 2
    } else {
        i + 1
    };
    if t.get(open) != Some(&Tok::Punct('[')) {
        return None;
    }
    let end = past_group(t, open);
    let body = &t[open + 1..end - 1];
    let is_test = body
        == [
            Tok::Ident("cfg".into()),
            Tok::Punct('('),
            Tok::Ident("test".into()),
            Tok::Punct(')'),
        ];
    Some((end, is_test))
}

/// The tokens without `#[cfg(test)]` items, and the names of `#[cfg(test)] mod x;` files.
/// `None` for a file that is `#![cfg(test)]` as a whole.
fn without_test_items(t: &[Tok]) -> Option<(Vec<Tok>, Vec<String>)> {
    let mut out = Vec::new();
    let mut test_files = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let Some((mut end, is_test)) = attribute(t, i) else {
            out.push(t[i].clone());
            i += 1;
            continue;
        };
        if !is_test {
            out.extend_from_slice(&t[i..end]);
            i = end;
            continue;
        }
        if t.get(i + 1) == Some(&Tok::Punct('!')) {
            return None;
        }
        // Further attributes of the same item, then the item up to its `;` or its body.
        while let Some((e, _)) = attribute(t, end) {
            end = e;
        }
        let mut j = end;
        while j < t.len() {
            match &t[j] {
                Tok::Punct(';') => {
                    if ident(t.get(j.wrapping_sub(2))) == Some("mod") {
                        if let Some(name) = ident(t.get(j - 1)) {
                            test_files.push(name.to_string());
                        }
                    }
                    j += 1;
                    break;
                }
                Tok::Punct('{') => {
                    j = past_group(t, j);
                    break;
                }
                Tok::Punct('(' | '[') => j = past_group(t, j),
                _ => j += 1,
            }
        }
        i = j;
    }
    Some((out, test_files))
}

/// The first names of the items of a group `{a, b::c, d::{e}}` opening at `i`.
fn group_heads(t: &[Tok], i: usize) -> Vec<String> {
    let end = past_group(t, i);
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    for tok in &t[i..end] {
        match tok {
            Tok::Punct('{') => {
                depth += 1;
                expect_head = depth == 1;
            }
            Tok::Punct('}') => depth -= 1,
            Tok::Punct(',') if depth == 1 => expect_head = true,
            Tok::Ident(s) if expect_head && depth == 1 => {
                heads.push(s.clone());
                expect_head = false;
            }
            _ => expect_head = false,
        }
    }
    heads
}

/// The top-level modules (or `ROOT`) that the code of module `path` (`[]` for `lib.rs`) names.
fn targets(t: &[Tok], path: &[String], modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut add = |name: &str| {
        found.insert(if modules.contains(name) {
            name.to_string()
        } else {
            ROOT.to_string()
        });
    };
    // Inline `mod x { … }` (outside tests) shift what `super` means.
    let mut inline: Vec<(String, i32)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < t.len() {
        let starts_path = i == 0 || t[i - 1] != Tok::PathSep;
        match &t[i] {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Tok::Ident(m) if m == "mod" && t.get(i + 2) == Some(&Tok::Punct('{')) => {
                if let Some(name) = ident(t.get(i + 1)) {
                    inline.push((name.to_string(), depth));
                }
            }
            Tok::Ident(k) if starts_path && (k == "crate" || k == "super") => {
                // `j`: the `::` before the first name after `crate` or the last `super`.
                let mut j = i + 1;
                let mut climbs = 0;
                if k == "super" {
                    while ident(t.get(j - 1)) == Some("super") && t.get(j) == Some(&Tok::PathSep) {
                        climbs += 1;
                        j += 2;
                    }
                    j = j.saturating_sub(2);
                }
                let here = path.len() + inline.len();
                let leaves_to_root = k == "crate" || (climbs > 0 && climbs == here);
                if leaves_to_root && t.get(j) == Some(&Tok::PathSep) {
                    match t.get(j + 1) {
                        Some(Tok::Ident(name)) => add(name),
                        Some(Tok::Punct('{')) => group_heads(t, j + 1).iter().for_each(|n| add(n)),
                        _ => {}
                    }
                }
            }
            // In `lib.rs` a path may start with a module's bare name (`use routes::app`).
            Tok::Ident(name)
                if path.is_empty()
                    && starts_path
                    && modules.contains(name)
                    && t.get(i + 1) == Some(&Tok::PathSep) =>
            {
                add(name)
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Edges between top-level modules, each with a file where it was seen.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// `files`: (module path, file name, source); `[]` is the crate root.
fn graph(files: &[(Vec<String>, String, String)]) -> Graph {
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|(p, _, _)| p.first().cloned())
        .collect();
    let mut parsed = Vec::new();
    let mut test_only: BTreeSet<Vec<String>> = BTreeSet::new();
    for (path, file, src) in files {
        let Some((toks, test_files)) = without_test_items(&tokens(src)) else {
            test_only.insert(path.clone());
            continue;
        };
        for f in test_files {
            let mut p = path.clone();
            p.push(f);
            test_only.insert(p);
        }
        parsed.push((path, file, toks));
    }
    let mut g = Graph::new();
    for (path, file, toks) in parsed {
        if test_only.iter().any(|t| path.starts_with(t)) {
            continue;
        }
        let from = path.first().cloned().unwrap_or_else(|| ROOT.to_string());
        g.entry(from.clone()).or_default();
        for to in targets(&toks, path, &modules) {
            if to != from {
                g.entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| file.clone());
            }
        }
    }
    g
}

/// A cycle in the graph, as `a -> b -> … -> a`, if there is one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &Graph,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for next in g.get(n).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(next, g, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut done, &mut Vec::new()))
}

fn describe(g: &Graph, cycle: &[String]) -> String {
    let steps: Vec<String> = cycle
        .windows(2)
        .map(|w| format!("  {} -> {} (in {})", w[0], w[1], g[&w[0]][&w[1]]))
        .collect();
    format!(
        "import cycle between top-level modules: {}\n{}",
        cycle.join(" -> "),
        steps.join("\n")
    )
}

/// Every `.rs` file under `idp/src` but the binary's `main.rs`, with its module path.
fn crate_sources() -> Vec<(Vec<String>, String, String)> {
    fn walk(dir: &Path, rel: &mut Vec<String>, out: &mut Vec<(Vec<String>, String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                rel.push(name);
                walk(&p, rel, out);
                rel.pop();
            } else if let Some(stem) = name.strip_suffix(".rs") {
                if rel.is_empty() && stem == "main" {
                    continue;
                }
                let mut path = rel.clone();
                if !(stem == "mod" || (rel.is_empty() && stem == "lib")) {
                    path.push(stem.to_string());
                }
                let file = format!("src/{}", [rel.clone(), vec![name]].concat().join("/"));
                out.push((path, file, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    walk(&src, &mut Vec::new(), &mut out);
    assert!(
        out.iter().any(|(p, _, _)| p.is_empty()),
        "no lib.rs under {}",
        src.display()
    );
    out
}

#[test]
fn the_top_level_modules_have_no_import_cycle() {
    let g = graph(&crate_sources());
    assert!(g.len() > 10, "too few modules found: {g:?}");
    if let Some(cycle) = find_cycle(&g) {
        panic!("{}", describe(&g, &cycle));
    }
}

#[test]
fn every_import_points_down_the_layer_order() {
    let g = graph(&crate_sources());
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut wrong = Vec::new();
    for (from, edges) in &g {
        let Some(rf) = rank(from) else {
            wrong.push(format!("{from} is not placed in LAYERS"));
            continue;
        };
        for (to, file) in edges {
            match rank(to) {
                Some(rt) if rt < rf => {}
                Some(_) => wrong.push(format!("{from} -> {to} (in {file}) points up")),
                None => wrong.push(format!("{to} is not placed in LAYERS")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The reader itself: what counts as a dependency and what does not, and a cycle reported.
#[test]
fn the_reader_sees_every_form_of_path_and_reports_a_cycle() {
    let file = |path: &[&str], src: &str| {
        (
            path.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            format!("{}.rs", path.join("/")),
            src.to_string(),
        )
    };
    let files = vec![
        file(&[], "pub mod a; pub mod b; pub use c::thing;"),
        file(
            &["a"],
            r#"
            use crate::{b::One, c::{Two, Three}};
            // crate::d::commented_out
            const S: &str = "crate::d::in_a_string";
            const Q: char = '"'; fn f<'x>(s: &'x str) { crate::e::call(s); }
            #[cfg(test)]
            mod tests { use crate::f::Only; }
            #[cfg(test)]
            mod support;
            "#,
        ),
        file(&["a", "inner"], "use super::super::g::G; use super::Local;"),
        file(&["a", "support"], "use crate::h::H;"),
        file(&["b"], "fn f() { let x = crate::root_item(); }"),
        file(&["c"], "pub(crate) fn f() {}"),
        file(&["d"], ""),
        file(&["e"], "use crate::a::Back;"),
        file(&["f"], ""),
        file(&["g"], ""),
        file(&["h"], ""),
    ];
    let g = graph(&files);
    let edges = |m: &str| g[m].keys().cloned().collect::<Vec<_>>();
    assert_eq!(edges("a"), ["b", "c", "e", "g"]);
    assert_eq!(edges(ROOT), ["c"]);
    assert_eq!(edges("b"), [ROOT]);
    assert!(edges("c").is_empty());
    let cycle = find_cycle(&g).expect("a -> e -> a");
    assert_eq!(cycle, ["a", "e", "a"]);
    assert!(describe(&g, &cycle).contains("e -> a (in e.rs)"));

    let acyclic: Vec<_> = files.into_iter().filter(|(p, _, _)| p != &["e"]).collect();
    assert_eq!(find_cycle(&graph(&acyclic)), None);
}
