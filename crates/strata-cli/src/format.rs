//! `--format`: docker's Go-template syntax (gtmpl), the `table` prefix with column headers
//! and aligned columns (tabwriter, set up as docker's CLI sets up Go's tabwriter), and
//! `json` as a shorthand for `{{json .}}`.

use gtmpl::{Context, FuncError, Template, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

pub struct Formatter {
    template: Template,
    header: Option<String>,
    table: bool,
}

/// Rows are JSON objects; templates see their fields (`{{.ID}}`), `json` renders them.
pub type Row = serde_json::Map<String, serde_json::Value>;

impl Formatter {
    /// `spec` as the user gave it; `headers` maps field names to column titles.
    pub fn new(spec: &str, headers: &[(&str, &str)]) -> anyhow::Result<Formatter> {
        let spec = spec.replace("\\t", "\t").replace("\\n", "\n");
        let (table, body) = match spec.strip_prefix("table") {
            Some(rest) => (true, rest.trim_start().to_string()),
            None => (false, spec.clone()),
        };
        let body = if body.trim() == "json" {
            "{{json .}}".to_string()
        } else {
            body
        };
        let template = parse_template(&body)?;
        let header = if table {
            let h = parse_template(&body)?;
            let titles: HashMap<String, Value> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(*v)))
                .collect();
            Some(
                h.render(&Context::from(Value::Object(titles)))
                    .unwrap_or_default(),
            )
        } else {
            None
        };
        Ok(Formatter {
            template,
            header,
            table,
        })
    }

    pub fn render(&self, rows: &[Row], out: &mut dyn Write) -> anyhow::Result<()> {
        let mut text = String::new();
        if let Some(h) = &self.header {
            text.push_str(h.trim_end_matches('\n'));
            text.push('\n');
        }
        for row in rows {
            let v = to_value(&serde_json::Value::Object(row.clone()));
            let line = self
                .template
                .render(&Context::from(v))
                .map_err(|e| anyhow::anyhow!("template: {e}"))?;
            text.push_str(&line);
            text.push('\n');
        }
        if self.table {
            let mut tw = tabwriter::TabWriter::new(Vec::new()).minwidth(7).padding(3);
            tw.write_all(text.as_bytes())?;
            out.write_all(&tw.into_inner()?)?;
        } else {
            out.write_all(text.as_bytes())?;
        }
        Ok(())
    }
}

/// A template with the functions docker's templates offer.
fn parse_template(body: &str) -> anyhow::Result<Template> {
    let mut t = Template::default();
    t.add_func("json", json_func);
    t.add_func("upper", |a| Ok(Value::from(arg_str(a)?.to_uppercase())));
    t.add_func("lower", |a| Ok(Value::from(arg_str(a)?.to_lowercase())));
    t.add_func("join", join_func);
    t.add_func("truncate", truncate_func);
    t.add_func("pad", |a| Ok(Value::from(format!(" {} ", arg_str(a)?))));
    t.parse(body)
        .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?;
    Ok(t)
}

fn to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::from(u),
            (_, Some(i)) => Value::from(i),
            _ => Value::from(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::from(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(to_value).collect()),
        serde_json::Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect())
        }
    }
}

fn from_value(v: &Value) -> serde_json::Value {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::String(s) => s.clone().into(),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                u.into()
            } else if let Some(i) = n.as_i64() {
                i.into()
            } else {
                n.as_f64()
                    .map(serde_json::Value::from)
                    .unwrap_or(serde_json::Value::Null)
            }
        }
        Value::Array(a) => a.iter().map(from_value).collect(),
        Value::Object(o) | Value::Map(o) => serde_json::Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), from_value(v)))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
        ),
    }
}

fn arg_str(args: &[Value]) -> Result<String, FuncError> {
    match args.first() {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Ok(v.to_string()),
        None => Err(FuncError::AtLeastXArgs("function".into(), 1)),
    }
}

fn json_func(args: &[Value]) -> Result<Value, FuncError> {
    let v = args
        .first()
        .ok_or_else(|| FuncError::AtLeastXArgs("json".into(), 1))?;
    Ok(Value::from(
        serde_json::to_string(&from_value(v)).unwrap_or_default(),
    ))
}

fn join_func(args: &[Value]) -> Result<Value, FuncError> {
    let sep = args.get(1).map(|v| v.to_string()).unwrap_or_default();
    match args.first() {
        Some(Value::Array(a)) => Ok(Value::from(
            a.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(&sep),
        )),
        _ => Err(FuncError::AtLeastXArgs("join".into(), 2)),
    }
}

fn truncate_func(args: &[Value]) -> Result<Value, FuncError> {
    let s = arg_str(args)?;
    let n = match args.get(1) {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0) as usize,
        _ => return Err(FuncError::AtLeastXArgs("truncate".into(), 2)),
    };
    Ok(Value::from(s.chars().take(n).collect::<String>()))
}

/// Prints `items` as docker's inspect does: a JSON array indented by four spaces, or one
/// template rendering per item with `-f`.
pub fn print_inspect(
    items: &[serde_json::Value],
    format: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match format {
        Some(f) => {
            let fmt = Formatter::new(f, &[])?;
            let rows: Vec<Row> = items
                .iter()
                .filter_map(|v| v.as_object().cloned())
                .collect();
            fmt.render(&rows, out)
        }
        None => {
            let mut buf = Vec::new();
            let mut ser = serde_json::Serializer::with_formatter(
                &mut buf,
                serde_json::ser::PrettyFormatter::with_indent(b"    "),
            );
            serde::Serialize::serialize(items, &mut ser)?;
            out.write_all(&buf)?;
            out.write_all(b"\n")?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, &str)]) -> Row {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect()
    }

    #[test]
    fn table_with_headers() {
        let f = Formatter::new(
            "table {{.Repository}}\\t{{.ID}}",
            &[("Repository", "REPOSITORY"), ("ID", "IMAGE ID")],
        )
        .unwrap();
        let mut out = Vec::new();
        f.render(
            &[row(&[("Repository", "busybox"), ("ID", "abc")])],
            &mut out,
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s, "REPOSITORY   IMAGE ID\nbusybox      abc\n");
    }

    #[test]
    fn json_and_plain() {
        let f = Formatter::new("{{json .}}", &[]).unwrap();
        let mut out = Vec::new();
        f.render(&[row(&[("b", "2"), ("a", "1")])], &mut out)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"a\":\"1\",\"b\":\"2\"}\n"
        );
        let f = Formatter::new("{{.ID}}:{{upper .Tag}}", &[]).unwrap();
        let mut out = Vec::new();
        f.render(&[row(&[("ID", "x"), ("Tag", "latest")])], &mut out)
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "x:LATEST\n");
    }
}
