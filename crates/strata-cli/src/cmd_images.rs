//! Image commands: import, load, save, images, history, tag, rmi, inspect, image prune.

use crate::format::{print_inspect, Formatter, Row};
use crate::units::{created_at, human_size, since};
use crate::{CmdResult, Failure};
use clap::{ArgAction, Args};
use serde_json::json;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use strata_engine::{Engine, EngineError, ImageSummary, ImportOptions};

fn usage(msg: impl Into<String>) -> Failure {
    Failure {
        code: 125,
        message: msg.into(),
    }
}

#[derive(Args)]
pub struct ImportArgs {
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change")]
    changes: Vec<String>,
    /// Set commit message for imported image
    #[arg(short, long)]
    message: Option<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    platform: Option<String>,
    /// file or - for STDIN
    source: String,
    /// REPOSITORY[:TAG]
    reference: Option<String>,
}

pub fn import(engine: &Engine, a: ImportArgs) -> CmdResult {
    if a.source.contains("://") {
        return Err(usage(format!(
            "importing from a URL ({}) is not supported: download it and import the file",
            a.source
        )));
    }
    if let Some(p) = &a.platform {
        let host = format!("linux/{}", strata_image::config::host_arch());
        if *p != host {
            return Err(usage(format!(
                "platform {p:?} is not supported: this host is {host}"
            )));
        }
    }
    let opts = ImportOptions {
        source_name: a.source.clone(),
        reference: a.reference,
        changes: a.changes,
        message: a.message,
    };
    let id = if a.source == "-" {
        engine.import(&mut io::stdin().lock(), &opts)?
    } else {
        let mut f =
            std::fs::File::open(&a.source).map_err(|e| usage(format!("open {}: {e}", a.source)))?;
        engine.import(&mut f, &opts)?
    };
    println!("{id}");
    Ok(())
}

#[derive(Args)]
pub struct LoadArgs {
    /// Read from tar archive file, instead of STDIN
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// Suppress the load output
    #[arg(short, long)]
    quiet: bool,
}

pub fn load(engine: &Engine, a: LoadArgs) -> CmdResult {
    let report = match &a.input {
        Some(p) => {
            let mut f = std::fs::File::open(p).map_err(|e| Failure {
                code: 1,
                message: format!("open {}: {e}", p.display()),
            })?;
            engine.load(&mut f)?
        }
        None => {
            let stdin = io::stdin();
            if stdin.is_terminal() {
                return Err(Failure {
                    code: 1,
                    message: "requested load from stdin, but stdin is empty".into(),
                });
            }
            engine.load(&mut stdin.lock())?
        }
    };
    for (tag, old) in &report.moved {
        let shown = tag
            .parse::<strata_image::Reference>()
            .map(|r| r.familiar())
            .unwrap_or(tag.clone());
        println!(
            "The image {shown} already exists, renaming the old one with ID {old} to empty string"
        );
    }
    for t in &report.loaded {
        println!("Loaded image: {t}");
    }
    for id in &report.untagged_ids {
        println!("Loaded image ID: {id}");
    }
    Ok(())
}

#[derive(Args)]
pub struct SaveArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[arg(required = true)]
    images: Vec<String>,
}

pub fn save(engine: &Engine, a: SaveArgs) -> CmdResult {
    crate::write_archive(a.output.as_deref(), |w| Ok(engine.save(&a.images, w)?))
}

#[derive(Args)]
pub struct ImagesArgs {
    /// Show all images (default hides intermediate images)
    #[arg(short, long)]
    all: bool,
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// Show digests
    #[arg(long)]
    digests: bool,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Filter output based on conditions provided
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// REPOSITORY[:TAG]
    reference: Option<String>,
}

const IMAGE_HEADERS: &[(&str, &str)] = &[
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("Digest", "DIGEST"),
    ("ID", "IMAGE ID"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("Size", "SIZE"),
    ("SharedSize", "SHARED SIZE"),
    ("UniqueSize", "UNIQUE SIZE"),
    ("VirtualSize", "VIRTUAL SIZE"),
    ("Containers", "CONTAINERS"),
];

pub(crate) fn image_row(s: &ImageSummary, no_trunc: bool) -> Row {
    let (repo, tag) = match &s.reference {
        Some(r) => (r.familiar_name(), r.tag().unwrap_or("<none>").to_string()),
        None => ("<none>".into(), "<none>".into()),
    };
    let id = if no_trunc {
        s.id.to_string()
    } else {
        s.id.short().to_string()
    };
    let row = json!({
        "Repository": repo,
        "Tag": tag,
        "Digest": "<none>",
        "ID": id,
        "CreatedSince": since(Some(&s.created)),
        "CreatedAt": created_at(Some(&s.created)),
        "Size": human_size(s.size),
        "SharedSize": human_size(s.shared_size),
        "UniqueSize": human_size(s.size - s.shared_size),
        "VirtualSize": human_size(s.size),
        "Containers": "0",
    });
    row.as_object().cloned().expect("object")
}

struct ImageFilter {
    dangling: Option<bool>,
    references: Vec<String>,
    labels: Vec<(String, Option<String>)>,
    before: Option<String>,
    since: Option<String>,
}

fn parse_filters(engine: &Engine, filters: &[String]) -> Result<ImageFilter, Failure> {
    let mut f = ImageFilter {
        dangling: None,
        references: Vec::new(),
        labels: Vec::new(),
        before: None,
        since: None,
    };
    for spec in filters {
        let (k, v) = spec.split_once('=').ok_or_else(|| {
            usage(format!(
                "bad format of filter (expected name=value): {spec}"
            ))
        })?;
        match k {
            "dangling" => {
                f.dangling = Some(crate::units::parse_bool(v).ok_or_else(|| {
                    usage(format!("invalid filter 'dangling={v}': use true or false"))
                })?)
            }
            "reference" => f.references.push(v.to_string()),
            "label" => f.labels.push(match v.split_once('=') {
                Some((a, b)) => (a.to_string(), Some(b.to_string())),
                None => (v.to_string(), None),
            }),
            "before" => f.before = Some(engine.resolve_image(v).map(|d| d.to_string())?),
            "since" => f.since = Some(engine.resolve_image(v).map(|d| d.to_string())?),
            _ => {
                return Err(usage(format!(
                "invalid filter '{k}': images accept dangling, reference, label, before and since"
            )))
            }
        }
    }
    Ok(f)
}

/// Shell-style glob match (`*`, `?`), as docker's reference filter uses.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

pub fn images(engine: &Engine, a: ImagesArgs) -> CmdResult {
    let mut list = engine.list_images()?;
    let filter = parse_filters(engine, &a.filter)?;
    let _ = a.all; // strata keeps no intermediate images: -a lists the same set
    if let Some(r) = &a.reference {
        let pat = r.clone();
        list.retain(|s| {
            s.reference.as_ref().is_some_and(|x| {
                let (name, tag) = match pat.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                    Some((n, t)) => (n.to_string(), Some(t.to_string())),
                    None => (pat.clone(), None),
                };
                (glob(&name, &x.familiar_name()) || glob(&name, &x.name()))
                    && tag.is_none_or(|t| glob(&t, x.tag().unwrap_or("")))
            })
        });
    }
    if let Some(d) = filter.dangling {
        list.retain(|s| s.dangling == d);
    }
    for pat in &filter.references {
        list.retain(|s| {
            s.reference
                .as_ref()
                .is_some_and(|r| glob(pat, &r.familiar()) || glob(pat, &r.familiar_name()))
        });
    }
    if !filter.labels.is_empty() {
        let mut keep = Vec::new();
        for s in list {
            let labels = engine
                .inspect_image(&s.id.to_string())?
                .config
                .get("Labels")
                .cloned()
                .unwrap_or(json!({}));
            let ok = filter.labels.iter().all(|(k, v)| {
                match (labels.get(k).and_then(|x| x.as_str()), v) {
                    (Some(have), Some(want)) => have == want,
                    (Some(_), None) => true,
                    _ => false,
                }
            });
            if ok {
                keep.push(s);
            }
        }
        list = keep;
    }
    if filter.before.is_some() || filter.since.is_some() {
        let created_of = |id: &str| {
            engine
                .inspect_image(id)
                .map(|d| d.created)
                .unwrap_or_default()
        };
        let before = filter.before.as_deref().map(created_of);
        let after = filter.since.as_deref().map(created_of);
        list.retain(|s| {
            before.as_ref().is_none_or(|b| s.created < *b)
                && after.as_ref().is_none_or(|b| s.created > *b)
        });
    }
    list.sort_by(|x, y| y.created.cmp(&x.created));
    let mut out = io::stdout().lock();
    if a.quiet {
        let mut seen = std::collections::HashSet::new();
        for s in &list {
            if seen.insert(s.id.clone()) {
                writeln!(
                    out,
                    "{}",
                    if a.no_trunc {
                        s.id.to_string()
                    } else {
                        s.id.short().to_string()
                    }
                )?;
            }
        }
        return Ok(());
    }
    let default = if a.digests {
        "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    let fmt = Formatter::new(a.format.as_deref().unwrap_or(default), IMAGE_HEADERS)?;
    let rows: Vec<Row> = list.iter().map(|s| image_row(s, a.no_trunc)).collect();
    fmt.render(&rows, &mut out)?;
    Ok(())
}

#[derive(Args)]
pub struct HistoryArgs {
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long = "human", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    human: bool,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    image: String,
}

pub fn history(engine: &Engine, a: HistoryArgs) -> CmdResult {
    let rows = engine.history(&a.image)?;
    let mut out = io::stdout().lock();
    let id_of = |r: &strata_engine::HistoryRow| match &r.id {
        Some(d) if a.no_trunc => d.to_string(),
        Some(d) => d.short().to_string(),
        None => "<missing>".to_string(),
    };
    if a.quiet {
        for r in &rows {
            writeln!(out, "{}", id_of(r))?;
        }
        return Ok(());
    }
    let table: Vec<Row> = rows
        .iter()
        .map(|r| {
            let created_by = r.created_by.replace('\t', " ");
            let created_by = if a.no_trunc || created_by.chars().count() <= 45 { created_by } else { format!("{}…", created_by.chars().take(44).collect::<String>()) };
            let row = json!({
                "ID": id_of(r),
                "CreatedSince": if a.human { since(r.created.as_deref()) } else { r.created.clone().unwrap_or_default() },
                "CreatedAt": r.created.clone().unwrap_or_default(),
                "CreatedBy": created_by,
                "Size": if a.human { human_size(r.size) } else { r.size.to_string() },
                "Comment": r.comment,
            });
            row.as_object().cloned().expect("object")
        })
        .collect();
    let fmt = Formatter::new(
        a.format
            .as_deref()
            .unwrap_or("table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"),
        &[
            ("ID", "IMAGE"),
            ("CreatedSince", "CREATED"),
            ("CreatedAt", "CREATED AT"),
            ("CreatedBy", "CREATED BY"),
            ("Size", "SIZE"),
            ("Comment", "COMMENT"),
        ],
    )?;
    fmt.render(&table, &mut out)?;
    Ok(())
}

#[derive(Args)]
pub struct TagArgs {
    source: String,
    target: String,
}

pub fn tag(engine: &Engine, a: TagArgs) -> CmdResult {
    Ok(engine.tag(&a.source, &a.target)?)
}

#[derive(Args)]
pub struct RmiArgs {
    /// Force removal of the image
    #[arg(short, long)]
    force: bool,
    /// Do not delete untagged parents
    #[arg(long)]
    no_prune: bool,
    #[arg(required = true)]
    images: Vec<String>,
}

pub fn rmi(engine: &Engine, a: RmiArgs) -> CmdResult {
    crate::each_name(&a.images, |name| {
        let r = engine.remove_image(name, a.force)?;
        for t in r.untagged {
            println!("Untagged: {t}");
        }
        for d in r.deleted {
            println!("Deleted: {d}");
        }
        Ok(())
    })
}

#[derive(Args)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    format: Option<String>,
    /// Return JSON for specified type (image)
    #[arg(long = "type")]
    kind: Option<String>,
    /// Display total file sizes if the type is container
    #[arg(short, long)]
    size: bool,
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct ImageInspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    images: Vec<String>,
}

fn inspect_images(
    engine: &Engine,
    names: &[String],
    format: Option<&str>,
    not_found: impl Fn(&str) -> String,
) -> CmdResult {
    let mut items = Vec::new();
    let mut missing = Vec::new();
    for n in names {
        match engine.inspect_image(n) {
            Ok(d) => items.push(serde_json::to_value(d).expect("details serialise")),
            Err(EngineError::NoSuchImage(_)) => missing.push(not_found(n)),
            Err(e) => return Err(e.into()),
        }
    }
    print_inspect(&items, format, &mut io::stdout().lock())?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            code: 1,
            message: missing.join("\nError: "),
        })
    }
}

pub fn inspect(engine: &Engine, a: InspectArgs) -> CmdResult {
    if let Some(k) = a
        .kind
        .as_deref()
        .filter(|k| !["image", "container"].contains(k))
    {
        return Err(usage(format!(
            "\"{k}\" is not a valid value for --type: strata can inspect containers and images"
        )));
    }
    crate::cmd_containers::inspect_any(
        engine,
        &a.names,
        a.kind.as_deref(),
        a.size,
        a.format.as_deref(),
    )
}

pub fn image_inspect(engine: &Engine, a: ImageInspectArgs) -> CmdResult {
    inspect_images(engine, &a.images, a.format.as_deref(), |n| {
        format!("No such image: {n}")
    })
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
}

pub fn prune(engine: &Engine, a: PruneArgs) -> CmdResult {
    let what = if a.all {
        "all images without at least one container associated to them"
    } else {
        "all dangling images"
    };
    crate::prune_confirmed(a.force, what, "Deleted Images:", || {
        let (removed, freed) = engine.prune_images(a.all)?;
        Ok((
            removed.iter().map(|d| format!("deleted: {d}")).collect(),
            freed,
        ))
    })
}

#[derive(Args)]
pub struct MountArgs {
    #[arg(required = true)]
    images: Vec<String>,
}

pub fn mount(engine: &Engine, a: MountArgs) -> CmdResult {
    for i in &a.images {
        println!("{}", engine.mount_image(i)?.display());
    }
    Ok(())
}

pub fn umount(engine: &Engine, a: MountArgs) -> CmdResult {
    for i in &a.images {
        engine.unmount_image(i)?;
        println!("{i}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("busy*", "busybox"));
        assert!(glob("*:latest", "busybox:latest"));
        assert!(!glob("busy?", "busybox"));
        assert!(glob("a*b*c", "axxbyyc"));
    }
}
