//! The crate's floors: imports between top-level modules only go down the
//! table of layers in the README's Architecture section, and never close a
//! cycle within a layer. A reviewer reading one module can then ignore every
//! module above it.
//!
//! The checker reads the README's table and every file under `src/`, and
//! names the file and line of each import that breaks the rule. Test code
//! (files named `tests.rs`, files under a `tests/` directory, and an inline
//! `#[cfg(test)] mod tests`) may import anything: it is not part of the
//! library's graph. Comments are skipped, so doc links may point anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer of each top-level module, from the README's table.
type Layers = BTreeMap<String, Layer>;

#[derive(Clone, Debug)]
struct Layer {
    index: usize,
    name: String,
}

/// One reference from a module to another: `crate::<to>` at `file:line`.
#[derive(Clone, Debug)]
struct Import {
    from: String,
    to: String,
    file: String,
    line: usize,
}

#[test]
fn imports_only_go_down_the_layers_of_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let layers = parse_layers(&readme).expect("the README's table of layers");
    let sources = read_sources(&root.join("src"));
    let problems = check(&layers, &sources);
    assert!(
        problems.is_empty(),
        "the layers are broken (README, Architecture, Layers):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_names_an_upward_import_and_a_cycle() {
    let layers = parse_layers(
        "| layer | what | modules |\n|---|---|---|\n\
         | 0 | leaf | `clock` |\n\
         | 1 | domain | `grant`, `request` |\n\
         | 2 | servers | `server` |\n",
    )
    .expect("a table");
    let clean: Vec<(String, String)> = vec![
        ("src/clock.rs".into(), "pub struct Clock;\n".into()),
        (
            "src/grant.rs".into(),
            "use crate::clock::Clock;\nuse crate::request::RequestId;\n".into(),
        ),
        (
            "src/request.rs".into(),
            "//! See [`crate::server`].\nuse crate::clock::Clock;\n\
             #[cfg(test)]\nmod tests {\n    use crate::server::Gateway;\n}\n"
                .into(),
        ),
        (
            "src/server.rs".into(),
            "use crate::{clock::Clock, grant::{Grant, GrantId}};\n".into(),
        ),
        (
            "src/server/tests.rs".into(),
            "use crate::server::Gateway;\n".into(),
        ),
    ];
    assert_eq!(check(&layers, &clean), Vec::<String>::new());

    // The same tree with one upward import and one cycle in the domain.
    let mut broken = clean.clone();
    broken[0]
        .1
        .push_str("fn f() { let _ = crate::server::Gateway::bind; }\n");
    broken[2].1 = "use crate::clock::Clock;\nuse crate::grant::GrantId;\n".into();
    let problems = check(&layers, &broken);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert_eq!(
        problems[0],
        "src/clock.rs:2: `clock` (layer 0, leaf) imports `server` (layer 2, servers), \
         a layer above it"
    );
    assert!(
        problems[1].starts_with("cycle in layer 1 (domain): grant -> request -> grant"),
        "{}",
        problems[1]
    );
    assert!(
        problems[1].contains("src/grant.rs:2") && problems[1].contains("src/request.rs:2"),
        "{}",
        problems[1]
    );

    // A module the table does not place is a problem too: a new module
    // must be given its floor.
    let mut unplaced = clean;
    unplaced.push(("src/stray.rs".into(), String::new()));
    assert_eq!(
        check(&layers, &unplaced),
        vec!["src/stray.rs: module `stray` is in no layer of the README's table".to_owned()]
    );
}

/// The rows of the table whose header is `| layer | what | modules |`:
/// the layer's number, its name, and its modules in backticks.
fn parse_layers(readme: &str) -> Result<Layers, String> {
    let mut lines = readme
        .lines()
        .skip_while(|l| l.trim() != "| layer | what | modules |")
        .skip(2);
    let mut layers = Layers::new();
    for line in lines.by_ref().take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [index, name, modules] = cells[..] else {
            return Err(format!("a row of three cells, not `{line}`"));
        };
        let index: usize = index
            .parse()
            .map_err(|_| format!("a layer number, not `{index}`"))?;
        for module in modules.split(',') {
            let module = module.trim().trim_matches('`');
            let layer = Layer {
                index,
                name: name.to_owned(),
            };
            if layers.insert(module.to_owned(), layer).is_some() {
                return Err(format!("`{module}` is in two layers"));
            }
        }
    }
    if layers.is_empty() {
        return Err("no table with the header `| layer | what | modules |`".to_owned());
    }
    Ok(layers)
}

/// Every `.rs` file under `dir`, as (path from the crate root, text).
fn read_sources(dir: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(dir, &mut paths);
    paths.sort();
    let root = dir.parent().expect("src/ has a parent");
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            let shown = path
                .strip_prefix(root)
                .expect("under the crate root")
                .to_string_lossy()
                .replace('\\', "/");
            (shown, text)
        })
        .collect()
}

/// The problems with `sources` under `layers`, one line each.
fn check(layers: &Layers, sources: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut imports = Vec::new();
    for (file, text) in sources {
        let Some(module) = top_module(file) else {
            continue;
        };
        if !layers.contains_key(&module) {
            problems.push(format!(
                "{file}: module `{module}` is in no layer of the README's table"
            ));
            continue;
        }
        if is_test_file(file) {
            continue;
        }
        imports.extend(
            references(text)
                .into_iter()
                .filter(|(_, to)| *to != module)
                .map(|(line, to)| Import {
                    from: module.clone(),
                    to,
                    file: file.clone(),
                    line,
                }),
        );
    }
    for import in &imports {
        let from = &layers[&import.from];
        match layers.get(&import.to) {
            None => problems.push(format!(
                "{}:{}: `{}` imports `{}`, which the README's table does not place",
                import.file, import.line, import.from, import.to
            )),
            Some(to) if to.index > from.index => problems.push(format!(
                "{}:{}: `{}` (layer {}, {}) imports `{}` (layer {}, {}), a layer above it",
                import.file,
                import.line,
                import.from,
                from.index,
                from.name,
                import.to,
                to.index,
                to.name
            )),
            Some(_) => {}
        }
    }
    problems.extend(cycles(layers, &imports));
    problems
}

/// The module a file belongs to: `src/grant/token.rs` is `grant`; the crate
/// roots (`lib.rs`, `main.rs`) belong to none.
fn top_module(file: &str) -> Option<String> {
    let rest = file.strip_prefix("src/")?;
    let first = rest.split('/').next()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_owned())
}

fn is_test_file(file: &str) -> bool {
    file.ends_with("/tests.rs") || file.contains("/tests/")
}

/// The top-level modules `text` names as `crate::<module>`, with the line,
/// outside comments and outside an inline `#[cfg(test)] mod tests`.
fn references(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut in_tests = false;
    let mut depth = 0i64;
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let code = line.trim_start();
        if !in_tests
            && code == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|(_, next)| next.trim_start().starts_with("mod tests"))
        {
            in_tests = true;
            depth = 0;
            continue;
        }
        if in_tests {
            depth += line.matches('{').count() as i64 - line.matches('}').count() as i64;
            if depth <= 0 && line.contains('}') {
                in_tests = false;
            }
            continue;
        }
        if code.starts_with("//") {
            continue;
        }
        let code = code.split(" //").next().unwrap_or(code);
        for (at, _) in code.match_indices("crate::") {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let rest = &code[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                found.extend(
                    group_heads(group, &mut lines)
                        .into_iter()
                        .map(|m| (n + 1, m)),
                );
            } else {
                found.push((n + 1, ident(rest)));
            }
        }
    }
    found.retain(|(_, m)| !m.is_empty() && m != "self");
    found
}

/// The first segment of each item in `use crate::{a::b, c::{d, e}}`, reading
/// further lines while the group is open.
fn group_heads<'a>(first: &str, lines: &mut impl Iterator<Item = (usize, &'a str)>) -> Vec<String> {
    let mut text = first.to_owned();
    while text.matches('{').count() >= text.matches('}').count() {
        match lines.next() {
            Some((_, line)) => text.push_str(line),
            None => break,
        }
    }
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && !c.is_whitespace() => {
                heads.push(ident(&text[i..]));
                item_start = false;
            }
            _ => {}
        }
    }
    heads
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Cycles among the modules of one layer, each with the imports that close it.
fn cycles(layers: &Layers, imports: &[Import]) -> Vec<String> {
    let mut edges: BTreeMap<&str, BTreeMap<&str, &Import>> = BTreeMap::new();
    for import in imports {
        let (Some(from), Some(to)) = (layers.get(&import.from), layers.get(&import.to)) else {
            continue;
        };
        if from.index == to.index {
            edges
                .entry(import.from.as_str())
                .or_default()
                .entry(import.to.as_str())
                .or_insert(import);
        }
    }
    let mut problems = Vec::new();
    let mut reported: BTreeSet<Vec<&str>> = BTreeSet::new();
    for &start in edges.keys() {
        if let Some(path) = path_back(&edges, start) {
            let mut key = path.clone();
            key.sort();
            if !reported.insert(key) {
                continue;
            }
            let layer = &layers[start];
            let names: Vec<&str> = path.iter().copied().chain([start]).collect();
            let sites: Vec<String> = names
                .windows(2)
                .map(|w| {
                    let import = edges[w[0]][w[1]];
                    format!("{}:{} ({} -> {})", import.file, import.line, w[0], w[1])
                })
                .collect();
            problems.push(format!(
                "cycle in layer {} ({}): {}; at {}",
                layer.index,
                layer.name,
                names.join(" -> "),
                sites.join(", ")
            ));
        }
    }
    problems
}

/// The shortest path of modules from `start` back to `start`, if any.
fn path_back<'a>(
    edges: &BTreeMap<&'a str, BTreeMap<&'a str, &Import>>,
    start: &'a str,
) -> Option<Vec<&'a str>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for &next in edges.get(at).into_iter().flat_map(|e| e.keys()) {
            if next == start {
                let mut path = vec![at];
                while let Some(&prev) = came_from.get(path[path.len() - 1]) {
                    path.push(prev);
                }
                path.reverse();
                return Some(path);
            }
            if next != start && !came_from.contains_key(next) {
                came_from.insert(next, at);
                queue.push_back(next);
            }
        }
    }
    None
}
