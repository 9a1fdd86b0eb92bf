//! `If-None-Match` (RFC 9110 §13.1.2): the entity tags a client holds, and
//! whether the current ETag is one of them.

use axum::http::HeaderMap;
use axum::http::header::IF_NONE_MATCH;

/// The entity tags of an `If-None-Match` header (RFC 9110 §13.1.2: weak comparison).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityTags {
    /// `*`: matches any current version.
    Any,
    /// The listed tags, quoted, without `W/`.
    List(Vec<String>),
}

impl EntityTags {
    /// Parses every `If-None-Match` header of a request; `None` if there is none.
    pub fn from_headers(headers: &HeaderMap) -> Option<EntityTags> {
        let mut tags = Vec::new();
        for value in headers.get_all(IF_NONE_MATCH) {
            let Ok(value) = value.to_str() else { continue };
            for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if tag == "*" {
                    return Some(EntityTags::Any);
                }
                tags.push(tag.strip_prefix("W/").unwrap_or(tag).to_string());
            }
        }
        (!tags.is_empty()).then_some(EntityTags::List(tags))
    }

    /// Whether `etag` (quoted) is one of these.
    pub fn matches(&self, etag: &str) -> bool {
        match self {
            EntityTags::Any => true,
            EntityTags::List(tags) => tags.iter().any(|t| t == etag),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn tags(values: &[&str]) -> Option<EntityTags> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
        }
        EntityTags::from_headers(&headers)
    }

    #[test]
    fn if_none_match_lists_weak_tags_and_star() {
        assert_eq!(tags(&[]), None);
        let list = tags(&["\"a\", W/\"b\"", "\"c\""]).unwrap();
        assert!(list.matches("\"a\"") && list.matches("\"b\"") && list.matches("\"c\""));
        assert!(!list.matches("\"d\""));
        assert!(tags(&["*"]).unwrap().matches("\"anything\""));
    }
}
