//! Image references, normalised as docker does: `busybox` is
//! `docker.io/library/busybox:latest`.
//!
//! The grammar (docker's distribution/reference) is checked by hand here, not with
//! oci-spec's parser: that one compiles a large regular expression on first use, which
//! cost about 30 ms in every strata process that named an image (measured: `image inspect
//! NAME` 33 ms against 3 ms for `images`), more than whole commands should take.

use std::fmt;
use std::str::FromStr;

const NAME_MAX: usize = 255;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid reference format: {input:?}: {rule}")]
pub struct ReferenceError {
    pub input: String,
    pub rule: String,
}

const NAME_RULE: &str = "a repository name is lowercase letters, digits and separators (. _ __ -), components joined by /";
const TAG_RULE: &str = "a tag is up to 128 of [A-Za-z0-9_.-], not starting with . or -";
const DIGEST_RULE: &str = "a digest is sha256:<64 lowercase hex digits>";

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// Host names (`a.b-c.d`) with an optional `:port`.
fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
    };
    host.split('.').all(label_ok)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|x| x.is_ascii_digit()))
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|x| word(*x) || *x == b'.' || *x == b'-')
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        let fail = |rule: &str| ReferenceError {
            input: s.to_string(),
            rule: rule.to_string(),
        };
        if s.is_empty() {
            return Err(fail(
                "a reference needs a repository name, e.g. busybox or busybox:1.36",
            ));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let hex = d.strip_prefix("sha256:").ok_or_else(|| fail(DIGEST_RULE))?;
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|x| x.is_ascii_digit() || (b'a'..=b'f').contains(&x))
                {
                    return Err(fail(DIGEST_RULE));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let (name, tag) = match rest.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => {
                if !valid_tag(t) {
                    return Err(fail(TAG_RULE));
                }
                (n, Some(t.to_string()))
            }
            _ => (rest, None),
        };
        if name.is_empty() || name.len() > NAME_MAX {
            return Err(fail(&format!(
                "a repository name is 1 to {NAME_MAX} characters"
            )));
        }
        // docker's rule: the first component is a registry when it looks like a host.
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                if !valid_domain(first) {
                    return Err(fail("a registry is a host name with an optional :port"));
                }
                (first.to_string(), path.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(fail("repository name must be lowercase"));
        }
        if !path.split('/').all(valid_path_component) {
            return Err(fail(NAME_RULE));
        }
        let registry = if registry == "index.docker.io" {
            "docker.io".to_string()
        } else {
            registry
        };
        let repository = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl Reference {
    pub fn registry(&self) -> &str {
        &self.registry
    }
    pub fn repository(&self) -> &str {
        &self.repository
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository` in full.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// The name as docker prints it: `busybox`, `myorg/app`, `localhost:5000/app`.
    pub fn familiar_name(&self) -> String {
        if self.registry() == "docker.io" {
            self.repository()
                .strip_prefix("library/")
                .unwrap_or(self.repository())
                .to_string()
        } else {
            self.name()
        }
    }

    /// `familiar_name:tag`, the form `images` and `RepoTags` use.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        if let Some(t) = self.tag() {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = self.digest() {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let r: Reference = "busybox".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar(), "busybox:latest");
        let r: Reference = "localhost:5000/a/b:v1".parse().unwrap();
        assert_eq!(r.to_string(), "localhost:5000/a/b:v1");
        assert_eq!(r.familiar(), "localhost:5000/a/b:v1");
        let r: Reference = "myorg/app:1.0".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/myorg/app:1.0");
        assert_eq!(r.familiar(), "myorg/app:1.0");
    }

    #[test]
    fn refuses_bad_ones_naming_the_rule() {
        let e = "Busybox".parse::<Reference>().unwrap_err();
        assert!(e.to_string().contains("lowercase"), "{e}");
        assert!("a:b:c".parse::<Reference>().is_err());
        assert!("busybox:-x".parse::<Reference>().is_err());
        assert!("".parse::<Reference>().is_err());
        assert!("busybox@sha256:abc".parse::<Reference>().is_err());
        assert!("a__b/c--d/e.f:v1.0_x".parse::<Reference>().is_ok());
        assert!("a___b".parse::<Reference>().is_err());
        assert!("-a".parse::<Reference>().is_err());
        assert!("a/".parse::<Reference>().is_err());
        assert!("busybox:.x".parse::<Reference>().is_err());
        let d = format!("busybox@sha256:{}", "a".repeat(64));
        let r: Reference = d.parse().unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.to_string(), format!("docker.io/library/{}", &d));
        let r: Reference = "index.docker.io/x/y".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/x/y:latest");
        let r: Reference = "Registry.Example:5000/app".parse().unwrap();
        assert_eq!(r.registry(), "Registry.Example:5000");
    }
}
