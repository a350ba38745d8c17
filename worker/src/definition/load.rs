//! Reading a directory of definition files: every file read, parsed and
//! validated, every problem collected, nothing half-loaded.

use super::*;

/// One problem in one file: what is wrong with which key, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: PathBuf,
    /// Dotted key path (`schedule.cron`), or empty for the file as a whole.
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, " (fix: {})", self.fix)?;
        }
        Ok(())
    }
}

/// Every problem found in a directory of definitions.
#[derive(Clone, Debug, thiserror::Error, Serialize)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the definitions (nothing was written):",
            if n == 1 { "" } else { "s" }
        )?;
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// A validated definition and the file it came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub file: PathBuf,
    pub definition: Definition,
}

/// Reads and validates every `*.toml` in `dir` (sorted by name). Either all
/// files are valid and unique, or every problem is returned.
pub fn load_dir(dir: &Path) -> Result<Vec<Loaded>, Problems> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            return Err(Problems(vec![Problem {
                file: dir.to_path_buf(),
                key: String::new(),
                message: format!("cannot read the definitions directory: {e}"),
                fix: "pass --definitions DIR (or set ACTCORE_DEFINITIONS) to a directory of *.toml files".into(),
            }]));
        }
    };
    // Every `*.toml` is a definition: one that cannot be read (a dangling
    // symlink, a loop, a directory, no permission) is a problem, never skipped.
    let mut problems = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) if e.path().extension().is_some_and(|x| x == "toml") => files.push(e.path()),
            Ok(_) => {}
            Err(e) => problems.push(problem(
                dir,
                "",
                format!("cannot list the definitions directory: {e}"),
                "check the directory's permissions and the disk",
            )),
        }
    }
    files.sort();

    // Files are independent: parse them on every core, in contiguous
    // chunks so that results and problems keep the sorted file order.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8)
        .min(files.len().div_ceil(MIN_FILES_PER_THREAD))
        .max(1);
    let chunk = files.len().div_ceil(threads).max(1);
    let results: Vec<(Vec<Loaded>, Vec<Problem>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = files.chunks(chunk).map(|c| scope.spawn(|| load_files(c))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    let mut loaded = Vec::new();
    for (mut l, mut p) in results {
        loaded.append(&mut l);
        problems.append(&mut p);
    }
    check_unique(&loaded, &mut problems);
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(Problems(problems))
    }
}

/// Below this many files per thread, a thread costs more than it saves.
pub(super) const MIN_FILES_PER_THREAD: usize = 256;

/// Reads and parses `files` in order; one cache of checked schedules for all.
pub(super) fn load_files(files: &[PathBuf]) -> (Vec<Loaded>, Vec<Problem>) {
    let mut checked = CheckedSchedules::default();
    let mut problems = Vec::new();
    let mut loaded = Vec::with_capacity(files.len());
    for file in files {
        let text = match read_definition(file) {
            Ok(t) => t,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        match parse_checked(file, &text, &mut checked) {
            Ok(definition) => loaded.push(Loaded {
                file: file.clone(),
                definition,
            }),
            Err(mut ps) => problems.append(&mut ps),
        }
    }
    (loaded, problems)
}

/// A definition file's text, or the problem that keeps it from being read:
/// what the file is (a dangling symlink, a loop, a directory), why, and the fix.
pub(super) fn read_definition(file: &Path) -> Result<String, Problem> {
    let link = std::fs::symlink_metadata(file)
        .ok()
        .filter(|m| m.file_type().is_symlink())
        .map(|_| match std::fs::read_link(file) {
            Ok(target) => format!("symlink to `{}`", target.display()),
            Err(_) => "symlink".to_string(),
        });
    let what = link.as_deref().unwrap_or("file");
    let unreadable = |message: String, fix: &str| problem(file, "", message, fix);
    let metadata = std::fs::metadata(file).map_err(|e| match (e.kind(), &link) {
        (std::io::ErrorKind::NotFound, Some(_)) => unreadable(
            format!("cannot read: dangling {what}, which does not exist"),
            "point the link at an existing definition file, or remove the link",
        ),
        (_, Some(_)) => unreadable(
            format!("cannot read: the {what} cannot be followed: {e}"),
            "a symlink loop never reaches a file: point the link at a definition file, or remove it",
        ),
        (std::io::ErrorKind::PermissionDenied, None) => unreadable(
            format!("cannot read: {e}"),
            "check the permissions of the file and its directory",
        ),
        _ => unreadable(format!("cannot read: {e}"), "check the file and the disk"),
    })?;
    if !metadata.is_file() {
        return Err(unreadable(
            format!("cannot read: this {what} is not a regular file"),
            "definitions are *.toml files: rename or remove it",
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| {
        let fix = if e.kind() == std::io::ErrorKind::PermissionDenied {
            "check the permissions of the file (the worker's user must read it)"
        } else {
            "check the file and the disk"
        };
        unreadable(format!("cannot read: {e}"), fix)
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
        let column = at - bytes[..at].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) + 1;
        unreadable(
            format!(
                "line {line}, column {column}: not valid UTF-8 (byte 0x{:02x}); TOML files must be UTF-8",
                bytes[at]
            ),
            "re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`",
        )
    })
}

pub(super) fn check_unique(loaded: &[Loaded], problems: &mut Vec<Problem>) {
    let mut ids: HashMap<Uuid, &Path> = HashMap::new();
    let mut slugs: HashMap<&str, &Path> = HashMap::new();
    for l in loaded {
        if let Some(first) = ids.insert(l.definition.id, &l.file) {
            problems.push(problem(
                &l.file,
                "id",
                format!("duplicate id {} (also in {})", l.definition.id, first.display()),
                "every activity needs its own id: generate one with `uuidgen` for the newer file",
            ));
        }
        if let Some(first) = slugs.insert(&l.definition.slug, &l.file) {
            problems.push(problem(
                &l.file,
                "slug",
                format!("duplicate slug `{}` (also in {})", l.definition.slug, first.display()),
                "slugs are the CLI handle and must be unique: rename one",
            ));
        }
    }
}

pub(super) fn problem(file: &Path, key: &str, message: impl Into<String>, fix: impl Into<String>) -> Problem {
    Problem {
        file: file.to_path_buf(),
        key: key.to_string(),
        message: message.into(),
        fix: fix.into(),
    }
}

/// Parses and validates one file's text. `file` is only used in messages.
pub fn parse_str(file: &Path, text: &str) -> Result<Definition, Vec<Problem>> {
    parse_checked(file, text, &mut CheckedSchedules::default())
}

/// `(cron, time zone)` pairs already found valid, with their shortest
/// period once a jitter needed it: thousands of files usually share a few
/// schedules, and parsing a cron is most of the cost of validating a file.
pub(super) struct CheckedSchedules {
    /// Where shortest periods are measured from: when loading began.
    pub(super) now: Timestamp,
    pub(super) valid: HashMap<(String, String), CheckedSchedule>,
}

pub(super) struct CheckedSchedule {
    pub(super) schedule: Schedule,
    /// Measured on first use (only a non-zero jitter needs it).
    pub(super) shortest: Option<Option<Period>>,
}

impl Default for CheckedSchedules {
    fn default() -> Self {
        CheckedSchedules {
            now: Timestamp::now(),
            valid: HashMap::new(),
        }
    }
}

impl CheckedSchedules {
    /// The shortest period of a valid schedule (None: fewer than two instants in eight years).
    pub(super) fn shortest_period(&mut self, key: &(String, String)) -> Option<Period> {
        let now = self.now;
        let checked = self.valid.get_mut(key)?;
        *checked
            .shortest
            .get_or_insert_with(|| shortest_period(&checked.schedule, now))
    }
}

pub(super) fn parse_checked(
    file: &Path,
    text: &str,
    checked: &mut CheckedSchedules,
) -> Result<Definition, Vec<Problem>> {
    let raw: raw::File = toml::from_str(text).map_err(|e| vec![toml_problem(file, text, &e)])?;
    let mut v = Validator {
        file,
        problems: Vec::new(),
        checked,
    };
    let def = v.definition(raw);
    match def {
        Some(d) if v.problems.is_empty() => Ok(d),
        _ => Err(v.problems),
    }
}

pub(super) fn toml_problem(file: &Path, text: &str, e: &toml::de::Error) -> Problem {
    let before = e.span().map(|s| &text[..s.start.min(text.len())]);
    let at = before
        .map(|b| format!("line {}: ", b.matches('\n').count() + 1))
        .unwrap_or_default();
    let message = e.message().trim();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return problem(
            file,
            "",
            format!("{at}{message}"),
            "correct the TOML syntax at that line (https://toml.io)",
        );
    };
    let name = rest.split('`').next().unwrap_or_default();
    let expected = rest.split_once(", expected ").map(|x| x.1).unwrap_or("");
    // Name the key with its table, as the other problems do (`schedule.timezon`).
    let table = before.and_then(|b| {
        b.lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.trim_matches(['[', ']', ' ']).to_string())
    });
    let key = match table {
        Some(t) if !t.is_empty() => format!("{t}.{name}"),
        _ => name.to_string(),
    };
    problem(
        file,
        &key,
        format!("{at}unknown key `{name}`"),
        format!("remove the key or correct its spelling; expected {expected}"),
    )
}
