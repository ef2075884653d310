//! Where the bytes of a node's state are: an accounting of the visitor
//! state of shards and of aggregate stores by part, for the memory benchmark
//! (`node/benches/memory.rs`, docs/benchmarks.md "Memory per live
//! visitor"). Nothing on the ingest or query path calls it.
//!
//! Sizes are what the structures hold: inline sizes from `size_of`, heap
//! sizes from lengths and capacities. Two parts are estimates and say so:
//! hash tables (buckets from the capacity, at hashbrown's 7/8 load) and
//! B-tree nodes (leaves of `BTREE_NODE_SLOTS` slots). A shared `Arc` is
//! counted once, at its first holder, so interned names cost nothing per
//! event. `allocator_overhead_bytes` is what the allocator adds per
//! allocation on top of the requested size, for glibc's malloc (16-byte
//! chunks with an 8-byte header, 32 bytes at least); fragmentation and
//! freed memory the allocator keeps are what RSS shows beyond the total.

use super::aggregates::{AggregateStore, Bucket, CellKey, CellSeries};
use super::visitor::{FrozenExposure, FrozenKey, Visitor};
use crate::event::{DecisionData, Event};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::mem::{size_of, size_of_val};
use std::sync::Arc;

/// Slots of a node of std's B-tree (`2 × B − 1`, B = 6).
const BTREE_NODE_SLOTS: usize = 11;
/// Bytes of a B-tree node besides its slots (parent pointer, index, length).
const BTREE_NODE_HEADER_BYTES: usize = 16;
/// glibc malloc: the chunk header and the smallest chunk.
const MALLOC_HEADER_BYTES: usize = 8;
const MALLOC_CHUNK_BYTES_MIN: usize = 32;
const MALLOC_ALIGNMENT_BYTES: usize = 16;

/// Bytes by part. `total_bytes` sums them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryAccount {
    /// Visitor hash tables: key slots (`Box<str>` pointers) and control
    /// bytes, empty slots included; the inline `Visitor`s are counted apart.
    pub visitor_table_bytes: usize,
    /// `Visitor` structs inside the tables, empty slots included.
    pub visitor_struct_bytes: usize,
    /// The visitor ids' heap.
    pub visitor_id_bytes: usize,
    /// `Event` structs held by visitors (length × size).
    pub event_struct_bytes: usize,
    /// Unused capacity of the visitors' event vectors.
    pub event_slack_bytes: usize,
    /// Event ids' heap.
    pub event_id_bytes: usize,
    /// Names on events not shared with another holder (key, attributes,
    /// decisions) and the buffers holding an event's name pairs.
    pub event_name_bytes: usize,
    /// Frozen summaries: exposures, their attributes and keys.
    pub frozen_bytes: usize,
    /// Segment stores: cells, B-tree buckets and counters, sketches aside.
    pub segment_bytes: usize,
    /// Sketch registers.
    pub sketch_bytes: usize,
    /// What the allocator adds to every allocation above (estimate).
    pub allocator_overhead_bytes: usize,
    pub allocations: usize,
    /// Shared allocations already counted (by address).
    seen: HashSet<usize>,
}

impl MemoryAccount {
    pub fn total_bytes(&self) -> usize {
        self.visitor_table_bytes
            + self.visitor_struct_bytes
            + self.visitor_id_bytes
            + self.event_struct_bytes
            + self.event_slack_bytes
            + self.event_id_bytes
            + self.event_name_bytes
            + self.frozen_bytes
            + self.segment_bytes
            + self.sketch_bytes
            + self.allocator_overhead_bytes
    }

    /// The parts as (name, bytes), in the order of the fields.
    pub fn parts(&self) -> Vec<(&'static str, usize)> {
        vec![
            (
                "visitor table (key slots, control bytes)",
                self.visitor_table_bytes,
            ),
            ("Visitor structs", self.visitor_struct_bytes),
            ("visitor ids (heap)", self.visitor_id_bytes),
            ("Event structs", self.event_struct_bytes),
            ("event vector slack", self.event_slack_bytes),
            ("event ids (heap)", self.event_id_bytes),
            (
                "event names and name-pair buffers (heap)",
                self.event_name_bytes,
            ),
            ("frozen summaries", self.frozen_bytes),
            (
                "segment stores (cells, buckets, counters)",
                self.segment_bytes,
            ),
            ("sketch registers", self.sketch_bytes),
            (
                "allocator overhead (glibc estimate)",
                self.allocator_overhead_bytes,
            ),
        ]
    }

    /// Counts one heap allocation of `bytes`; answers `bytes`.
    fn allocation(&mut self, bytes: usize) -> usize {
        if bytes == 0 {
            return 0;
        }
        let chunk_bytes = (bytes + MALLOC_HEADER_BYTES)
            .div_ceil(MALLOC_ALIGNMENT_BYTES)
            .max(MALLOC_CHUNK_BYTES_MIN / MALLOC_ALIGNMENT_BYTES)
            * MALLOC_ALIGNMENT_BYTES;
        self.allocator_overhead_bytes += chunk_bytes - bytes;
        self.allocations += 1;
        bytes
    }

    /// An `Arc<str>`'s allocation (two counters and the text), once.
    fn shared_name(&mut self, name: &Arc<str>) -> usize {
        if !self.seen.insert(Arc::as_ptr(name) as *const u8 as usize) {
            return 0;
        }
        self.allocation(2 * size_of::<usize>() + name.len())
    }

    fn boxed_text(&mut self, text: &str) -> usize {
        self.allocation(text.len())
    }

    fn name_pairs(&mut self, pairs: &[(Arc<str>, Arc<str>)], capacity: usize) -> usize {
        let mut bytes = self.allocation(capacity * size_of::<(Arc<str>, Arc<str>)>());
        for (name, value) in pairs {
            bytes += self.shared_name(name) + self.shared_name(value);
        }
        bytes
    }

    /// A hash table of `capacity` (usable slots) with `slot_bytes` per slot.
    fn hash_table(&mut self, capacity: usize, slot_bytes: usize) -> usize {
        if capacity == 0 {
            return 0;
        }
        let buckets = (capacity * 8 / 7).next_power_of_two();
        self.allocation(buckets * slot_bytes + buckets + MALLOC_ALIGNMENT_BYTES)
    }

    /// A B-tree map's nodes, assuming the leaves of a map that grew by
    /// splitting are about two thirds full.
    fn btree<K, V>(&mut self, map: &BTreeMap<K, V>) -> usize {
        if map.is_empty() {
            return 0;
        }
        let slot_bytes = size_of::<K>() + size_of::<V>();
        let node_bytes = BTREE_NODE_SLOTS * slot_bytes + BTREE_NODE_HEADER_BYTES;
        let nodes = if map.len() <= BTREE_NODE_SLOTS {
            1
        } else {
            (map.len() * 3).div_ceil(BTREE_NODE_SLOTS * 2)
        };
        let mut bytes = 0;
        for _ in 0..nodes {
            bytes += self.allocation(node_bytes);
        }
        bytes
    }

    /// One project's visitor table.
    pub fn add_visitors(&mut self, visitors: &HashMap<Box<str>, Visitor>) {
        let key_bytes = size_of::<Box<str>>();
        let visitor_bytes = size_of::<Visitor>();
        let table = self.hash_table(visitors.capacity(), key_bytes + visitor_bytes);
        let buckets = if visitors.capacity() == 0 {
            0
        } else {
            (visitors.capacity() * 8 / 7).next_power_of_two()
        };
        self.visitor_struct_bytes += buckets * visitor_bytes;
        self.visitor_table_bytes += table - buckets * visitor_bytes;
        for (id, visitor) in visitors {
            let id_bytes = self.boxed_text(id);
            self.visitor_id_bytes += id_bytes;
            self.add_visitor(visitor);
        }
    }

    fn add_visitor(&mut self, visitor: &Visitor) {
        let events = visitor.events();
        let event_bytes = size_of::<Event>();
        self.allocation(visitor.events_capacity() * event_bytes);
        self.event_struct_bytes += size_of_val(events);
        self.event_slack_bytes += (visitor.events_capacity() - events.len()) * event_bytes;
        for event in events {
            self.add_event(event);
        }
        let frozen = visitor.frozen();
        let frozen_vector_bytes = self.allocation(size_of_val(frozen));
        self.frozen_bytes += frozen_vector_bytes;
        for exposure in frozen {
            self.add_frozen(exposure);
        }
    }

    fn add_event(&mut self, event: &Event) {
        let id_bytes = self.boxed_text(&event.id);
        self.event_id_bytes += id_bytes;
        let mut names = 0;
        if let Some(key) = &event.key {
            names += self.shared_name(key);
        }
        if let Some(decision) = &event.decision {
            names += self.allocation(size_of::<DecisionData>());
            names += self.name_pairs(&decision.attributes, decision.attributes.len());
            names += self.name_pairs(&decision.decisions, decision.decisions.len());
        }
        self.event_name_bytes += names;
    }

    fn add_frozen(&mut self, exposure: &FrozenExposure) {
        let mut bytes =
            self.shared_name(&exposure.experiment) + self.shared_name(&exposure.variation);
        bytes += self.name_pairs(&exposure.attributes, exposure.attributes.capacity());
        bytes += self.allocation(exposure.keys.capacity() * size_of::<FrozenKey>());
        for key in &exposure.keys {
            bytes += self.shared_name(&key.key);
        }
        self.frozen_bytes += bytes;
    }

    /// An aggregate store's experiments of `projects`.
    pub fn add_segment_store(&mut self, store: &AggregateStore, projects: &[Arc<str>]) {
        for project in projects {
            for experiment in store.experiments_of(project) {
                let Some(aggregates) = store.experiment(project, &experiment) else {
                    continue;
                };
                let cells = &aggregates.cells;
                let mut bytes = self.allocation(cells.capacity() * size_of::<CellSeries>());
                // The cell index holds a copy of every key.
                bytes += self.hash_table(cells.len(), size_of::<(CellKey, usize)>());
                for series in cells {
                    bytes += self.btree(&series.base) + self.btree(&series.rollup);
                    let buckets = series.base.values().chain(series.rollup.values());
                    for bucket in buckets.chain(series.whole.as_ref()) {
                        bytes += self.add_bucket(bucket);
                    }
                }
                self.segment_bytes += bytes;
            }
        }
    }

    fn add_bucket(&mut self, bucket: &Bucket) -> usize {
        if let Some(sketch) = &bucket.sketch {
            let sketch_bytes = self.allocation(sketch.heap_bytes());
            self.sketch_bytes += sketch_bytes;
        }
        self.btree(&bucket.counters.keys)
    }
}
