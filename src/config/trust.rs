//! `[trust.<CC>]` and `[admin]`: each jurisdiction's CA, its CRLs and the
//! SPIFFE trust domain bound to it, and the identities of our own trust
//! domain allowed on the admin listener, with their roles.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::{Validator, raw};
use crate::identity::Role;
use crate::identity::{Jurisdiction, SpiffeId, TrustDomain};

/// One jurisdiction's CA, the SPIFFE trust domain bound to it, and its CRLs.
#[derive(Clone, Debug)]
pub struct TrustAnchor {
    pub trust_domain: TrustDomain,
    pub ca: PathBuf,
    pub crls: Vec<PathBuf>,
}

impl Validator<'_> {
    pub(super) fn trust(
        &mut self,
        raw: BTreeMap<String, raw::Trust>,
    ) -> BTreeMap<Jurisdiction, TrustAnchor> {
        let mut trust = BTreeMap::new();
        let mut domains: HashMap<TrustDomain, Jurisdiction> = HashMap::new();
        if raw.is_empty() {
            self.errors.push(
                "trust",
                "no trust anchors: add a [trust.<CC>] table per jurisdiction",
            );
        }
        for (cc, anchor) in raw {
            let Some(jurisdiction) = self.parse::<Jurisdiction>(&format!("trust.{cc}"), &cc) else {
                continue;
            };
            let key = format!("trust.{cc}.trust_domain");
            let Some(trust_domain) = self.parse::<TrustDomain>(&key, &anchor.trust_domain) else {
                continue;
            };
            if let Some(other) = domains.insert(trust_domain.clone(), jurisdiction.clone()) {
                self.errors.push(
                    key,
                    format!("trust domain {trust_domain} is already bound to `trust.{other}`"),
                );
            }
            let crls = anchor.crls.iter().map(|p| self.path(p)).collect();
            trust.insert(
                jurisdiction,
                TrustAnchor {
                    trust_domain,
                    ca: self.path(&anchor.ca),
                    crls,
                },
            );
        }
        trust
    }

    pub(super) fn admins(
        &mut self,
        raw: raw::Admin,
        jurisdiction: Option<&Jurisdiction>,
        trust: &BTreeMap<Jurisdiction, TrustAnchor>,
    ) -> BTreeMap<SpiffeId, Vec<Role>> {
        let own_domain = jurisdiction
            .and_then(|j| trust.get(j))
            .map(|a| &a.trust_domain);
        let mut admins = BTreeMap::new();
        for (id, roles) in raw.identities {
            let key = format!("admin.identities.\"{id}\"");
            let Some(id) = self.parse::<SpiffeId>(&key, &id) else {
                continue;
            };
            if let Some(domain) = own_domain
                && id.trust_domain() != domain
            {
                self.errors.push(
                    key,
                    format!("{id} is outside our own trust domain {domain}: admins are ours"),
                );
                continue;
            }
            let mut parsed = Vec::new();
            for role in roles {
                match role.parse::<Role>() {
                    Ok(role) if !parsed.contains(&role) => parsed.push(role),
                    Ok(_) => {}
                    Err(e) => self.errors.push(key.clone(), e),
                }
            }
            if parsed.is_empty() {
                self.errors.push(
                    key,
                    "no roles: give one or more of reviewer, approver, operator",
                );
                continue;
            }
            admins.insert(id, parsed);
        }
        admins
    }
}
