//! `[peers.<CC>]`: the foreign gateways our `local` listener relays to, each
//! by its border address and the name its server certificate must carry.

use std::collections::BTreeMap;

use super::{Validator, raw};
use crate::identity::Jurisdiction;

/// A foreign gateway our `local` listener relays to.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its border listener, `host:port`; a name is resolved at each connect,
    /// so DNS changes are followed.
    pub border: String,
    /// The name its server certificate must carry.
    pub server_name: String,
}

impl Validator<'_> {
    pub(super) fn peers(
        &mut self,
        raw: BTreeMap<String, raw::Peer>,
    ) -> BTreeMap<Jurisdiction, Peer> {
        let mut peers = BTreeMap::new();
        for (cc, peer) in raw {
            let Some(jurisdiction) = self.parse::<Jurisdiction>(&format!("peers.{cc}"), &cc) else {
                continue;
            };
            let key = format!("peers.{cc}.border");
            let parts = peer.border.rsplit_once(':');
            let Some((host, _)) = parts.filter(|(h, p)| {
                !h.trim_matches(['[', ']']).is_empty() && p.parse::<u16>().is_ok()
            }) else {
                self.errors
                    .push(key, format!("`{}` is not host:port", peer.border));
                continue;
            };
            let server_name = peer
                .server_name
                .unwrap_or_else(|| host.trim_matches(['[', ']']).to_owned());
            let border = peer.border;
            peers.insert(
                jurisdiction,
                Peer {
                    border,
                    server_name,
                },
            );
        }
        peers
    }
}
