//! What the engine writes to the ingest log and to checkpoints, and how it
//! is encoded.
//!
//! Log records carry a `JournalEntry`; checkpoint parts carry the project
//! registry, one `ShardState` per shard and one `AggregateStore` per
//! aggregate actor. Both are postcard-encoded behind a one-byte format version, so a
//! future change of layout is detected instead of misread. Internal types
//! derive serde only for these encodings; they are never sent to clients.
//!
//! Every encode is checked, in debug builds, by decoding and encoding again:
//! the second encoding must have the same length (hash maps may list their
//! entries in another order, so bytes can differ; lengths cannot). A type
//! that does not round-trip fails loudly in tests instead of corrupting a
//! checkpoint.

use super::shard::ShardState;
use crate::event::Event;
use crate::project::ProjectConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Version of the journal and checkpoint encodings.
pub const FORMAT_VERSION: u8 = 1;

/// Log shard tag of records that concern every shard (project changes).
pub const ALL_SHARDS: u32 = u32::MAX;

/// One log record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JournalEntry {
    /// Events of one shard from one batch, with the "now" they were
    /// accepted at: replay applies them at that same time, so it reaches the
    /// same decisions.
    Events {
        now_ms: i64,
        events: Vec<JournalEvent>,
    },
    /// A project was created or its settings changed.
    Project { config: ProjectConfig },
    /// A shard moved here: its whole state (visitors, frozen summaries,
    /// event ids for deduplication) as the previous owner handed it over.
    InstallShard { shard: u32, state: ShardState },
    /// A shard moved away: its state is dropped here.
    DropShard { shard: u32 },
    /// This node's aggregates (its own and those it had absorbed, the
    /// stores named) were handed to another node (`engine::stores`): its
    /// query shares stop counting them.
    HandOverStores {
        stores: std::collections::BTreeSet<u64>,
    },
    /// Another node's handed-over aggregates (an encoded
    /// `engine::stores::StoresHandover`, as received), merged into this
    /// node's.
    AbsorbStores { handover: Vec<u8> },
}

/// A validated event with its visitor and project (by name; the project's
/// configuration is whatever the journal installed before it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEvent {
    pub project: Arc<str>,
    pub visitor: Box<str>,
    pub event: Event,
}

impl From<crate::event::VisitorEvent> for JournalEvent {
    fn from(event: crate::event::VisitorEvent) -> JournalEvent {
        JournalEvent {
            project: Arc::clone(&event.project.name),
            visitor: event.visitor,
            event: event.event,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("format version {found}; this node reads version {FORMAT_VERSION}")]
    Version { found: u8 },
    #[error("cannot decode {what}: {detail}")]
    Decode { what: &'static str, detail: String },
}

/// Encodes with the version byte in front.
pub fn encode<T: Serialize + DeserializeOwned>(value: &T) -> Vec<u8> {
    let mut bytes = vec![FORMAT_VERSION];
    bytes.extend(postcard::to_stdvec(value).expect("in-memory values always encode"));
    if cfg!(debug_assertions) {
        let decoded: T = decode(&bytes, "round-trip check").expect("what we encode decodes");
        let again = encode_unchecked(&decoded);
        assert_eq!(
            again.len(),
            bytes.len(),
            "encode → decode → encode keeps the size"
        );
    }
    bytes
}

fn encode_unchecked<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![FORMAT_VERSION];
    bytes.extend(postcard::to_stdvec(value).expect("in-memory values always encode"));
    bytes
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::Version { found: version });
    }
    postcard::from_bytes(body).map_err(|error| CodecError::Decode {
        what,
        detail: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::project::ProjectRegistry;

    #[test]
    fn entries_round_trip_and_versions_are_checked() {
        let registry = ProjectRegistry::default();
        let (config, _) = registry.create("shop", &Default::default()).unwrap();
        let entry = JournalEntry::Events {
            now_ms: 42,
            events: vec![JournalEvent {
                project: Arc::from("shop"),
                visitor: "v".into(),
                event: {
                    let mut event = Event {
                        id: "e".into(),
                        ts_ms: 40,
                        value_micros: 7,
                        key: None,
                        decision: None,
                        kind: EventKind::Decision,
                    };
                    event.set_name_pairs(
                        vec![(Arc::from("browser"), Arc::from("firefox"))],
                        vec![(Arc::from("x"), Arc::from("a"))],
                    );
                    event
                },
            }],
        };
        let bytes = encode(&entry);
        assert_eq!(decode::<JournalEntry>(&bytes, "entry").unwrap(), entry);
        let project = JournalEntry::Project {
            config: (*config).clone(),
        };
        assert_eq!(
            decode::<JournalEntry>(&encode(&project), "entry").unwrap(),
            project
        );
        let mut future = bytes.clone();
        future[0] = FORMAT_VERSION + 1;
        assert!(matches!(
            decode::<JournalEntry>(&future, "entry"),
            Err(CodecError::Version { .. })
        ));
        assert!(decode::<JournalEntry>(&bytes[..bytes.len() - 1], "entry").is_err());
        assert_eq!(decode::<JournalEntry>(&[], "entry"), Err(CodecError::Empty));
    }

    /// A project configuration written before keys were hashed (the same
    /// layout, with the key itself where the hashes now are) still decodes,
    /// and its key arrives hashed.
    #[test]
    fn a_configuration_with_a_plaintext_key_decodes_hashed() {
        #[derive(Serialize)]
        struct ConfigBeforeHashing {
            name: Arc<str>,
            settings: crate::project::Settings,
            version: u64,
            ingest_key: Arc<str>,
        }
        #[derive(Serialize)]
        enum EntryBeforeHashing {
            #[allow(dead_code)]
            Events,
            Project {
                config: ConfigBeforeHashing,
            },
        }
        let key = "0123456789abcdef0123456789abcdef";
        let old = EntryBeforeHashing::Project {
            config: ConfigBeforeHashing {
                name: Arc::from("shop"),
                settings: crate::project::Settings::default(),
                version: 3,
                ingest_key: Arc::from(key),
            },
        };
        let mut bytes = vec![FORMAT_VERSION];
        bytes.extend(postcard::to_stdvec(&old).unwrap());
        let JournalEntry::Project { config } = decode::<JournalEntry>(&bytes, "entry").unwrap()
        else {
            panic!("a project entry");
        };
        assert_eq!(config.version, 3);
        assert_eq!(
            config.ingest_keys,
            crate::keys::RotatingKey::new(crate::keys::KeyHash::of(key.as_bytes()))
        );
        // Written again, it holds no plaintext.
        let again = encode(&JournalEntry::Project { config });
        assert!(!again
            .windows(key.len())
            .any(|window| window == key.as_bytes()));
    }
}
