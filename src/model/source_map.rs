//! Positions of YAML nodes by key path.
//!
//! serde forgets where a value came from once it is deserialized, but a
//! cross-reference error ("unknown security group") must still name the
//! line and column. This index maps every key path (`hosts[1].networks[0]`)
//! to the position of its value, from one pass over the parser's events —
//! made the first time a position is asked for: a valid file is parsed
//! once (by the deserializer), a file with a problem twice.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use saphyr_parser::{Event, Parser};

/// Key path → 1-based (line, column) of the value.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    text: Arc<str>,
    positions: OnceLock<BTreeMap<String, (usize, usize)>>,
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
    },
    Seq {
        path: String,
        index: usize,
    },
    /// A mapping or sequence used as a key: positions inside it are not recorded.
    ComplexKey,
}

impl SourceMap {
    /// The index of `text`, made when first asked. A document the parser
    /// rejects yields what was read before the error; the deserializer
    /// reports the error itself.
    pub fn build(text: &str) -> Self {
        Self { text: Arc::from(text), positions: OnceLock::new() }
    }

    fn index(text: &str) -> BTreeMap<String, (usize, usize)> {
        let mut positions = BTreeMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let position = (span.start.line(), span.start.col() + 1);
            match event {
                Event::Scalar(..) | Event::Alias(_) => {
                    let text = match &event {
                        Event::Scalar(value, ..) => value.to_string(),
                        _ => String::new(),
                    };
                    match stack.last_mut() {
                        Some(Frame::Map { key: key @ None, .. }) => *key = Some(text),
                        Some(Frame::ComplexKey) => {}
                        _ => {
                            if let Some(path) = Self::next_child(&mut stack) {
                                positions.entry(path).or_insert(position);
                            }
                        }
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let is_map = matches!(event, Event::MappingStart(..));
                    let frame = match stack.last() {
                        Some(Frame::Map { key: None, .. }) | Some(Frame::ComplexKey) => {
                            Frame::ComplexKey
                        }
                        _ => {
                            let path = Self::next_child(&mut stack).unwrap_or_default();
                            positions.entry(path.clone()).or_insert(position);
                            if is_map {
                                Frame::Map { path, key: None }
                            } else {
                                Frame::Seq { path, index: 0 }
                            }
                        }
                    };
                    stack.push(frame);
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    if let Some(Frame::ComplexKey) = stack.pop() {
                        if let Some(Frame::Map { key: key @ None, .. }) = stack.last_mut() {
                            *key = Some("?".to_owned());
                        }
                    }
                }
                _ => {}
            }
        }
        positions
    }

    /// The path of the value about to be read, advancing the parent frame.
    fn next_child(stack: &mut [Frame]) -> Option<String> {
        match stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key }) => {
                let key = key.take()?;
                Some(if path.is_empty() { key } else { format!("{path}.{key}") })
            }
            Some(Frame::Seq { path, index }) => {
                let child = format!("{path}[{index}]");
                *index += 1;
                Some(child)
            }
            Some(Frame::ComplexKey) => None,
        }
    }

    /// Position of `path`, or of its nearest recorded ancestor (a missing
    /// key is reported at the mapping that lacks it).
    pub fn position(&self, path: &str) -> (usize, usize) {
        let positions = self.positions.get_or_init(|| Self::index(&self.text));
        let mut path = path;
        loop {
            if let Some(position) = positions.get(path) {
                return *position;
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => return positions.get("").copied().unwrap_or((1, 1)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "hosts:\n  - name: a\n    networks: [net1, net2]\n  - name: b\n    metadata:\n      team: x\n";

    #[test]
    fn values_are_found_by_key_path() {
        let map = SourceMap::build(DOC);
        assert_eq!(map.position("hosts[0].name"), (2, 11));
        assert_eq!(map.position("hosts[0].networks[1]"), (3, 22));
        assert_eq!(map.position("hosts[1].metadata.team"), (6, 13));
    }

    #[test]
    fn a_missing_path_falls_back_to_its_nearest_ancestor() {
        let map = SourceMap::build(DOC);
        assert_eq!(map.position("hosts[1].flavor"), (4, 5));
        assert_eq!(map.position("nothing.here"), (1, 1));
    }
}
