//! `[policy.<holder>.<requester>]`: the policy of each jurisdiction pair,
//! typed by `crate::policy`, each problem keyed by its pair.

use std::collections::BTreeMap;

use super::Validator;
use crate::identity::Jurisdiction;
use crate::policy::{PairPolicy, Policies, RawPairPolicy};

impl Validator<'_> {
    pub(super) fn policies(
        &mut self,
        raw: BTreeMap<String, BTreeMap<String, RawPairPolicy>>,
    ) -> Policies {
        let mut pairs = Vec::new();
        for (holder, requesters) in raw {
            let Some(holder_j) = self.parse::<Jurisdiction>(&format!("policy.{holder}"), &holder)
            else {
                continue;
            };
            for (requester, raw) in requesters {
                let prefix = format!("policy.{holder}.{requester}");
                let Some(requester_j) = self.parse::<Jurisdiction>(&prefix, &requester) else {
                    continue;
                };
                let mut problems = Vec::new();
                let pair = PairPolicy::from_raw(
                    holder_j.clone(),
                    requester_j,
                    raw,
                    &mut |key, problem| problems.push((format!("{prefix}.{key}"), problem)),
                );
                for (key, problem) in problems {
                    self.errors.push(key, problem);
                }
                pairs.extend(pair);
            }
        }
        Policies::new(pairs)
    }
}
