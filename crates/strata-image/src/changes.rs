//! The Dockerfile instructions `import -c` and `commit -c` accept, applied to a RunConfig.

use crate::config::RunConfig;

#[derive(Debug, thiserror::Error)]
#[error("invalid change {change:?}: {reason}")]
pub struct ChangeError {
    pub change: String,
    pub reason: String,
}

/// Applies one change such as `CMD ["sh"]`, `ENV A=1 B=2`, `WORKDIR /app`.
pub fn apply_change(run: &mut RunConfig, change: &str) -> Result<(), ChangeError> {
    let fail = |reason: &str| ChangeError {
        change: change.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = change.trim();
    let (instr, rest) = trimmed
        .split_once(char::is_whitespace)
        .unwrap_or((trimmed, ""));
    let rest = rest.trim();
    match instr.to_ascii_uppercase().as_str() {
        "CMD" => run.cmd = Some(command_form(rest)),
        "ENTRYPOINT" => run.entrypoint = Some(command_form(rest)),
        "ENV" => {
            for (k, v) in key_values(rest).map_err(|r| fail(&r))? {
                run.env.retain(|e| e.split('=').next() != Some(k.as_str()));
                run.env.push(format!("{k}={v}"));
            }
        }
        "LABEL" => {
            for (k, v) in key_values(rest).map_err(|r| fail(&r))? {
                run.labels.retain(|(lk, _)| *lk != k);
                run.labels.push((k, v));
            }
        }
        "WORKDIR" if !rest.is_empty() => run.working_dir = Some(rest.to_string()),
        "USER" if !rest.is_empty() => run.user = Some(rest.to_string()),
        "STOPSIGNAL" if !rest.is_empty() => run.stop_signal = Some(rest.to_string()),
        "EXPOSE" if !rest.is_empty() => {
            for p in rest.split_whitespace() {
                run.exposed_ports.push(if p.contains('/') { p.to_string() } else { format!("{p}/tcp") });
            }
        }
        "VOLUME" if !rest.is_empty() => run.volumes.extend(json_or_words(rest)),
        "ONBUILD" if !rest.is_empty() => run.onbuild.push(rest.to_string()),
        "WORKDIR" | "USER" | "STOPSIGNAL" | "EXPOSE" | "VOLUME" | "ONBUILD" => {
            return Err(fail("the instruction needs an argument"))
        }
        _ => {
            return Err(fail(
                "only CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME and WORKDIR can be changed",
            ))
        }
    }
    Ok(())
}

/// JSON array form is exec form; anything else runs through `/bin/sh -c`.
fn command_form(rest: &str) -> Vec<String> {
    match serde_json::from_str::<Vec<String>>(rest) {
        Ok(v) => v,
        Err(_) => vec!["/bin/sh".into(), "-c".into(), rest.to_string()],
    }
}

fn json_or_words(rest: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(rest)
        .unwrap_or_else(|_| rest.split_whitespace().map(str::to_string).collect())
}

/// `K=V K2="v 2"` or the legacy `K V` form.
fn key_values(rest: &str) -> Result<Vec<(String, String)>, String> {
    if rest.is_empty() {
        return Err("the instruction needs KEY=VALUE".into());
    }
    let first = rest.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        let (k, v) = rest
            .split_once(char::is_whitespace)
            .ok_or("the instruction needs KEY=VALUE")?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            chars.next();
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '\\') => {
                    if let Some(n) = chars.next() {
                        word.push(n)
                    }
                }
                (None, c) if c.is_whitespace() => break,
                (_, c) => word.push(c),
            }
        }
        if quote.is_some() {
            return Err("unterminated quote".into());
        }
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| format!("{word:?} is not KEY=VALUE"))?;
        if k.is_empty() {
            return Err("empty key".into());
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_changes() {
        let mut r = RunConfig::default();
        apply_change(&mut r, r#"CMD ["sh","-c","echo hi"]"#).unwrap();
        apply_change(&mut r, "ENTRYPOINT /bin/app --x").unwrap();
        apply_change(&mut r, r#"ENV A=1 B="two words""#).unwrap();
        apply_change(&mut r, "ENV A 3").unwrap();
        apply_change(&mut r, "WORKDIR /srv").unwrap();
        apply_change(&mut r, "EXPOSE 80 53/udp").unwrap();
        assert_eq!(r.cmd.unwrap(), vec!["sh", "-c", "echo hi"]);
        assert_eq!(r.entrypoint.unwrap(), vec!["/bin/sh", "-c", "/bin/app --x"]);
        assert_eq!(r.env, vec!["B=two words", "A=3"]);
        assert_eq!(r.exposed_ports, vec!["80/tcp", "53/udp"]);
        assert!(apply_change(&mut RunConfig::default(), "RUN rm -rf /").is_err());
        assert!(apply_change(&mut RunConfig::default(), "WORKDIR").is_err());
    }
}
