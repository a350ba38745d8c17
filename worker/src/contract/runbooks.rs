//! The command blocks of `runbooks/*.md`. Each fenced block carries a marker
//! in an HTML comment just before it:
//!
//! - `<!-- runbook: run -->`: the runbook test runs it against a local stack;
//! - `<!-- runbook: check -->`: it needs a cluster, systemctl or an image
//!   build; `contract verify` checks that every `actcore ...` in it names a
//!   subcommand and flags that exist (read from the clap tree, so it cannot drift);
//! - `<!-- runbook: pending -->`: its command is not on this branch yet;
//!   listed, not failed.
//!
//! `text` blocks are example output, not commands, and carry no marker.

use std::path::Path;

use super::Drift;

/// How a block is tested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Marker {
    Run,
    Check,
    Pending,
}

/// One fenced block of a runbook.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Block {
    pub file: String,
    /// The line of the opening fence (1-based).
    pub line: usize,
    pub lang: String,
    pub marker: Option<Marker>,
    pub text: String,
}

impl Block {
    /// `file:line`, for messages.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// The fenced blocks of one Markdown file, with their markers.
pub fn parse(file: &str, text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut marker = None;
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("<!-- runbook:") {
            marker = match rest.trim_end_matches("-->").trim() {
                "run" => Some(Ok(Marker::Run)),
                "check" => Some(Ok(Marker::Check)),
                "pending" => Some(Ok(Marker::Pending)),
                other => Some(Err(other.to_string())),
            };
            continue;
        }
        if let Some(lang) = t.strip_prefix("```") {
            let mut body = String::new();
            for (_, l) in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            blocks.push(Block {
                file: file.to_string(),
                line: i + 1,
                lang: lang.trim().to_string(),
                marker: marker.take().and_then(|m| m.ok()),
                text: body,
            });
            continue;
        }
        if !t.is_empty() {
            marker = None;
        }
    }
    blocks
}

/// Every runbook under `dir` (sorted), parsed; `file` is shown relative to `root`.
pub fn load(root: &Path, dir: &Path) -> std::io::Result<Vec<Block>> {
    let mut files: Vec<_> = std::fs::read_dir(root.join(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    let mut blocks = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let shown = f.strip_prefix(root).unwrap_or(&f).display().to_string();
        blocks.extend(parse(&shown, &text));
    }
    Ok(blocks)
}

/// Blocks whose language says they are example output, not commands.
pub fn is_output(block: &Block) -> bool {
    matches!(block.lang.as_str(), "text" | "json" | "yaml" | "toml")
}

/// The `actcore` invocations in a shell block: continuation lines joined,
/// comments dropped, split at pipes and `&&`/`;`, leading `VAR=value`s removed;
/// an `actcore` after `--` (`kubectl exec ... -- actcore status`) counts too.
pub fn actcore_invocations(text: &str) -> Vec<Vec<String>> {
    let joined = text.replace("\\\n", " ");
    let mut found = Vec::new();
    for line in joined.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let words = shell_words(line);
        for part in words.split(|w| matches!(w.as_str(), "|" | "&&" | "||" | ";")) {
            let part: Vec<String> = part
                .iter()
                .skip_while(|w| is_assignment(w) || w.as_str() == "$" || w.as_str() == "exec")
                // A redirection ends the command's own words.
                .take_while(|w| !is_redirection(w))
                .cloned()
                .collect();
            let is_actcore = |w: &String| w == "actcore" || w.ends_with("/actcore");
            if part.first().is_some_and(is_actcore) {
                found.push(part);
            } else if let Some(i) = part.windows(2).position(|w| w[0] == "--" && is_actcore(&w[1])) {
                // `kubectl exec deploy/actcore-worker -- actcore status`
                found.push(part[i + 1..].to_vec());
            }
        }
    }
    found
}

fn is_redirection(word: &str) -> bool {
    word.trim_start_matches(|c: char| c.is_ascii_digit() || c == '&')
        .starts_with(['>', '<'])
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=')
        .is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

/// Splits a shell line into words: quotes grouped, `#` comments dropped,
/// operators (`|`, `&&`, `||`, `;`) as their own words.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut started = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, '#') if !started => break,
            (None, ' ' | '\t') => {
                if started {
                    words.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            (None, '|' | '&' | ';') => {
                if started {
                    words.push(std::mem::take(&mut cur));
                    started = false;
                }
                let mut op = c.to_string();
                if let Some(&n) = chars.peek()
                    && (n == c)
                {
                    op.push(n);
                    chars.next();
                }
                words.push(op);
            }
            (None, c) => {
                cur.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(cur);
    }
    words
}

/// Checks one invocation against the command tree: every subcommand and
/// flag must exist. Returns what is wrong.
pub fn check_invocation(root: &clap::Command, argv: &[String]) -> Result<(), String> {
    let mut path: Vec<&clap::Command> = vec![root];
    let mut args = argv.iter().skip(1);
    while let Some(word) = args.next() {
        let cmd = *path.last().unwrap();
        if word == "--" {
            break;
        }
        if let Some(flag) = word.strip_prefix("--") {
            let (name, inline) = match flag.split_once('=') {
                Some((n, _)) => (n, true),
                None => (flag, false),
            };
            if name == "help" || name == "version" {
                continue;
            }
            let arg = path
                .iter()
                .rev()
                .enumerate()
                .flat_map(|(depth, c)| c.get_arguments().filter(move |a| depth == 0 || a.is_global_set()))
                .find(|a| a.get_long() == Some(name));
            let Some(arg) = arg else {
                return Err(format!("`{}` has no flag --{name}", command_path(&path)));
            };
            if arg.get_action().takes_values() && !inline {
                args.next();
            }
            continue;
        }
        if word.starts_with('-') && word.len() > 1 {
            let short = word.chars().nth(1).unwrap();
            if short == 'h' || short == 'V' {
                continue;
            }
            let arg = path
                .iter()
                .rev()
                .flat_map(|c| c.get_arguments())
                .find(|a| a.get_short() == Some(short));
            let Some(arg) = arg else {
                return Err(format!("`{}` has no flag -{short}", command_path(&path)));
            };
            if arg.get_action().takes_values() && word.len() == 2 {
                args.next();
            }
            continue;
        }
        if cmd.has_subcommands() {
            match cmd.find_subcommand(word) {
                Some(sub) => path.push(sub),
                None if word == "help" => return Ok(()),
                None => {
                    let names: Vec<_> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
                    return Err(format!(
                        "`{}` has no subcommand `{word}` (it has: {})",
                        command_path(&path),
                        names.join(", ")
                    ));
                }
            }
            continue;
        }
        if cmd.get_positionals().next().is_none() {
            return Err(format!("`{}` takes no argument `{word}`", command_path(&path)));
        }
    }
    let last = *path.last().unwrap();
    if last.is_subcommand_required_set() {
        return Err(format!("`{}` needs a subcommand", command_path(&path)));
    }
    Ok(())
}

fn command_path(path: &[&clap::Command]) -> String {
    path.iter().map(|c| c.get_name()).collect::<Vec<_>>().join(" ")
}

/// What `contract verify` reports about the runbooks: drifts (an unmarked
/// block, an unknown marker, a command that does not exist) and the
/// pending blocks.
pub fn check(blocks: &[Block], cli: &clap::Command) -> (Vec<Drift>, Vec<String>) {
    let mut drifts = Vec::new();
    let mut pending = Vec::new();
    for b in blocks {
        if is_output(b) {
            continue;
        }
        match b.marker {
            None => drifts.push(Drift::new(
                b.at(),
                "marker",
                "<!-- runbook: run|check|pending --> just before the block",
                "no marker",
                "mark the block: run (the runbook test runs it), check (needs a cluster; its actcore commands are checked) or pending",
            )),
            Some(Marker::Pending) => pending.push(format!("{} ({})", b.at(), first_command(&b.text))),
            Some(Marker::Run | Marker::Check) => {
                if b.lang == "sql" {
                    continue;
                }
                for argv in actcore_invocations(&b.text) {
                    if let Err(why) = check_invocation(cli, &argv) {
                        drifts.push(Drift::new(
                            b.at(),
                            argv.join(" "),
                            "a command of this actcore",
                            why,
                            "correct the runbook command (see actcore --help), or mark the block pending until the command lands",
                        ));
                    }
                }
            }
        }
    }
    (drifts, pending)
}

fn first_command(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("")
        .to_string()
}
