//! Group requests: routed to the group coordinator on shard 0 of the node
//! that leads the group's slot, and the coordinator taking over groups from
//! the bucket.

use super::*;

impl Shard {
    /// Hands a group request to the coordinator on shard 0.
    pub async fn group(self: &Rc<Self>, req: GroupRequest) -> Option<ResponseBody> {
        if self.id == COORDINATOR_SHARD {
            return self.group_local(req).await;
        }
        let msg = |reply| ShardMsg::Group {
            req: Box::new(req),
            reply,
        };
        self.ask(COORDINATOR_SHARD, msg, || None).await
    }

    pub(super) async fn group_local(&self, req: GroupRequest) -> Option<ResponseBody> {
        let c = self.coordinator.as_ref()?;
        self.adopt_groups(c).await;
        let table = self.topics.get();
        c.handle(req, |t| table.get(t).is_some()).await
    }

    /// After a view change, the groups whose slot this node now leads and
    /// another node led before come with their committed offsets: read from
    /// that node's snapshot in the bucket.
    pub(super) async fn adopt_groups(&self, c: &Rc<Coordinator>) {
        let generation = self.ctx.cluster.generation();
        let since = self.groups_seen.replace(generation);
        if since == generation {
            return;
        }
        let view = self.view();
        let me = self.ctx.node_id;
        // Every view since the last look: a slot that another node led in
        // any of them, however briefly, may have offsets committed there.
        let between = self.ctx.cluster.views_since(since);
        let mut from: HashMap<i32, std::collections::HashSet<i32>> = HashMap::new();
        for slot in 0..crate::group::coordinator::GROUP_SLOTS as i32 {
            if view
                .leader(crate::group::coordinator::GROUP_TOPIC, slot)
                .is_none_or(|m| m.node_id != me)
            {
                continue;
            }
            match &between {
                Some(views) => {
                    for v in views {
                        if let Some(m) = v.leader(crate::group::coordinator::GROUP_TOPIC, slot) {
                            if m.node_id != me {
                                from.entry(m.node_id).or_default().insert(slot);
                            }
                        }
                    }
                }
                // Views were missed: any other member may have led it.
                None => {
                    for m in view.members().iter().filter(|m| m.node_id != me) {
                        from.entry(m.node_id).or_default().insert(slot);
                    }
                }
            }
        }
        for (node, slots) in from {
            let name = crate::group::coordinator::groups_meta_name(node);
            match self.ctx.durable.get_meta(&name).await {
                Ok(Ok(Some(snapshot))) => {
                    c.adopt(&snapshot, |g| {
                        slots.contains(&crate::group::coordinator::group_slot(g))
                    })
                    .await
                }
                Ok(Ok(None)) | Err(_) => {}
                Ok(Err(e)) => {
                    tracing::warn!(node, error = %e, "could not read another node's offsets")
                }
            }
        }
    }

    /// Takes over the committed offsets of groups whose slot this node has
    /// come to lead, without waiting for a group request (shard 0, each
    /// retention pass).
    pub async fn adopt_groups_now(&self) {
        if let Some(c) = self.coordinator.as_ref() {
            self.adopt_groups(c).await;
        }
    }
}
