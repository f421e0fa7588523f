//! The snapshot committed offsets are persisted in (the layout is in the
//! module doc of [`super`]), and taking groups over from other nodes'
//! snapshots.

use super::*;

const SNAPSHOT_MAGIC: &[u8; 4] = b"FGOF";

const SNAPSHOT_VERSION: u16 = 1;

const NO_STRING: u32 = u32::MAX;

fn put_len(buf: &mut BytesMut, len: usize) {
    // Lengths come from Kafka requests, bounded far below 4 GiB.
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

fn put_str(buf: &mut BytesMut, s: &str) {
    put_len(buf, s.len());
    buf.put_slice(s.as_bytes());
}

type Offsets = BTreeMap<String, BTreeMap<i32, CommittedOffset>>;

fn decode_snapshot(data: &[u8]) -> Result<Vec<(String, Option<String>, Offsets)>, GroupError> {
    if data.len() < SNAPSHOT_MAGIC.len() || &data[..4] != SNAPSHOT_MAGIC {
        return Err(GroupError::SnapshotMagic);
    }
    if data.len() < 4 + 2 + 4 + 4 {
        return Err(GroupError::SnapshotTruncated {
            what: "header",
            at: data.len(),
        });
    }
    let (body, crc) = data.split_at(data.len() - 4);
    let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32c::crc32c(body);
    let mut r = SnapshotReader { data: body, at: 4 };
    let version = r.u16("format version")?;
    if version != SNAPSHOT_VERSION {
        return Err(GroupError::SnapshotVersion(version));
    }
    if stored != computed {
        return Err(GroupError::SnapshotChecksum { stored, computed });
    }
    let group_count = r.u32("group count")?;
    let mut groups = Vec::new();
    for _ in 0..group_count {
        let id = r.string("group id")?;
        let protocol_type = r.opt_string("protocol type")?;
        let topic_count = r.u32("topic count")?;
        let mut offsets = Offsets::new();
        for _ in 0..topic_count {
            let topic = r.string("topic name")?;
            let partition_count = r.u32("partition count")?;
            let partitions = offsets.entry(topic).or_default();
            for _ in 0..partition_count {
                let index = r.i32("partition index")?;
                let offset = CommittedOffset {
                    offset: r.i64("offset")?,
                    leader_epoch: r.i32("leader epoch")?,
                    commit_timestamp_ms: r.i64("commit timestamp")?,
                    metadata: r.string("metadata")?,
                };
                partitions.insert(index, offset);
            }
        }
        groups.push((id, protocol_type, offsets));
    }
    if r.at != body.len() {
        return Err(GroupError::SnapshotTrailing {
            extra: body.len() - r.at,
        });
    }
    Ok(groups)
}

/// Bounds-checked big-endian reads. Counts are never used to allocate up
/// front, so a corrupt count cannot allocate more than the data holds.
struct SnapshotReader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> SnapshotReader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], GroupError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or(GroupError::SnapshotTruncated { what, at: self.at })?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GroupError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, GroupError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GroupError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, GroupError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, GroupError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &'static str) -> Result<String, GroupError> {
        let len = self.u32(what)?;
        self.string_of(len, what)
    }

    fn opt_string(&mut self, what: &'static str) -> Result<Option<String>, GroupError> {
        match self.u32(what)? {
            NO_STRING => Ok(None),
            len => self.string_of(len, what).map(Some),
        }
    }

    fn string_of(&mut self, len: u32, what: &'static str) -> Result<String, GroupError> {
        let at = self.at;
        let len = usize::try_from(len).map_err(|_| GroupError::SnapshotTruncated { what, at })?;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| GroupError::SnapshotUtf8 { what, at })
    }
}

impl GroupCoordinator {
    /// Every committed offset, in the format described at the top of this
    /// file.
    pub fn snapshot(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_slice(SNAPSHOT_MAGIC);
        buf.put_u16(SNAPSHOT_VERSION);
        let groups: Vec<&Group> = self
            .groups
            .values()
            .filter(|g| !g.offsets.is_empty())
            .collect();
        put_len(&mut buf, groups.len());
        for g in groups {
            put_str(&mut buf, &g.id);
            match &g.protocol_type {
                Some(t) => put_str(&mut buf, t),
                None => buf.put_u32(NO_STRING),
            }
            put_len(&mut buf, g.offsets.len());
            for (topic, partitions) in &g.offsets {
                put_str(&mut buf, topic);
                put_len(&mut buf, partitions.len());
                for (&index, o) in partitions {
                    buf.put_i32(index);
                    buf.put_i64(o.offset);
                    buf.put_i32(o.leader_epoch);
                    buf.put_i64(o.commit_timestamp_ms);
                    put_str(&mut buf, &o.metadata);
                }
            }
        }
        let crc = crc32c::crc32c(&buf);
        buf.put_u32(crc);
        buf.freeze()
    }

    /// Replaces every committed offset with a snapshot's; meant for start-up,
    /// before requests are served. Groups in the snapshot that are not in
    /// memory come back Empty, and their retention time starts at `now_ms`.
    /// Nothing changes if the snapshot is bad. Returns how many offsets were
    /// restored.
    pub fn restore(&mut self, snapshot: &[u8], now_ms: u64) -> Result<usize, GroupError> {
        let decoded = decode_snapshot(snapshot)?;
        let mut restored = 0;
        for g in self.groups.values_mut() {
            g.offsets.clear();
        }
        for (id, protocol_type, offsets) in decoded {
            restored += offsets.values().map(BTreeMap::len).sum::<usize>();
            let group = self
                .groups
                .entry(id.clone())
                .or_insert_with(|| Group::new(&id, now_ms));
            if group.members.is_empty() {
                group.protocol_type = protocol_type;
            }
            group.offsets = offsets;
        }
        Ok(restored)
    }
}

impl GroupCoordinator {
    /// Takes over the committed offsets of the groups `take` picks from
    /// another node's snapshot (this node became their coordinator). An
    /// offset this node already holds for a partition is kept unless the
    /// snapshot's was committed later. Answers how many offsets were taken.
    pub fn adopt(
        &mut self,
        snapshot: &[u8],
        now_ms: u64,
        take: impl Fn(&str) -> bool,
    ) -> Result<usize, GroupError> {
        let mut taken = 0;
        for (id, protocol_type, offsets) in decode_snapshot(snapshot)? {
            if !take(&id) {
                continue;
            }
            let group = self
                .groups
                .entry(id.clone())
                .or_insert_with(|| Group::new(&id, now_ms));
            if group.members.is_empty() && group.protocol_type.is_none() {
                group.protocol_type = protocol_type;
            }
            for (topic, parts) in offsets {
                let mine = group.offsets.entry(topic).or_default();
                for (p, o) in parts {
                    // The newer commit wins: the other node may have been
                    // the coordinator after this one last was.
                    match mine.entry(p) {
                        std::collections::btree_map::Entry::Vacant(v) => {
                            v.insert(o);
                            taken += 1;
                        }
                        std::collections::btree_map::Entry::Occupied(mut e)
                            if e.get().commit_timestamp_ms < o.commit_timestamp_ms =>
                        {
                            e.insert(o);
                            taken += 1;
                        }
                        std::collections::btree_map::Entry::Occupied(_) => {}
                    }
                }
            }
        }
        if taken > 0 {
            self.offsets_changes += 1;
        }
        Ok(taken)
    }
}
