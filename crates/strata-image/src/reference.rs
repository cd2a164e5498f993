//! Image references, normalised as docker does: `busybox` is
//! `docker.io/library/busybox:latest`. Parsing is oci-spec's (the distribution grammar);
//! this module adds docker's wording for errors and the short "familiar" form for display.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    inner: oci_spec::distribution::Reference,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid reference format: {input:?}: {rule}")]
pub struct ReferenceError {
    pub input: String,
    pub rule: String,
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
        let name_part = s.split('@').next().unwrap_or(s);
        let name_only = match name_part.rfind(':') {
            Some(i) if !name_part[i + 1..].contains('/') => &name_part[..i],
            _ => name_part,
        };
        let path = match name_only.split_once('/') {
            Some((d, rest)) if d.contains('.') || d.contains(':') || d == "localhost" => rest,
            _ => name_only,
        };
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(fail("repository name must be lowercase"));
        }
        let inner: oci_spec::distribution::Reference =
            s.parse().map_err(|e: oci_spec::distribution::ParseError| {
                fail(&match e {
                    oci_spec::distribution::ParseError::ReferenceInvalidFormat => {
                        "a repository name is lowercase letters, digits and separators (. _ __ -), \
                     components joined by /; a tag is up to 128 of [A-Za-z0-9_.-] not starting \
                     with . or -; a digest is sha256:<64 hex>"
                            .to_string()
                    }
                    other => other.to_string(),
                })
            })?;
        Ok(Reference { inner })
    }
}

impl Reference {
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
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

    /// The same repository with another tag.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            inner: oci_spec::distribution::Reference::with_tag(
                self.registry().to_string(),
                self.repository().to_string(),
                tag.to_string(),
            ),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
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
    }
}
