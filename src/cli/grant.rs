//! `xborder grant list|show|validate|revoke`: the grants our approvals
//! created, on the admin listener.

use serde::Deserialize;
use serde_json::json;

use super::admin_client::{self, AdminArgs, AdminClient};
use super::request::{ScopeView, scope_fields};
use crate::clock::Timestamp;
use crate::grant::{Cause, GrantId, GrantState, Quotas};
use crate::request::RequestId;

#[derive(clap::Subcommand)]
pub enum GrantCommand {
    /// List grants with their expiry and, once ended, why.
    List {
        /// Only grants in this state: active, expired, exhausted, revoked.
        #[arg(long, value_name = "STATE")]
        state: Option<GrantState>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one grant: scope, quotas and use, approvers, how it ended.
    Show {
        /// The grant's ID (a UUID).
        id: GrantId,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Validate an emergency grant as its second approver.
    Validate {
        /// The grant's ID (a UUID).
        id: GrantId,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke an active grant now; transfers under it are cut.
    Revoke {
        /// The grant's ID (a UUID).
        id: GrantId,
        /// Why it is revoked (an incident, the case closed); kept with the
        /// grant, and its SHA-256 in the audit log.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

pub fn run(cmd: GrantCommand) -> anyhow::Result<()> {
    match cmd {
        GrantCommand::List { state, admin } => {
            let path = match state {
                Some(state) => format!("/v1/grants?state={}", state.as_str()),
                None => "/v1/grants".to_owned(),
            };
            let answer = AdminClient::new(&admin)?.get(&path)?;
            if admin.json {
                return admin_client::print_json(&answer);
            }
            let list: GrantList = admin_client::view(answer, "grant list")?;
            if list.grants.is_empty() {
                println!("no grants");
                return Ok(());
            }
            print!("{}", grants_table(&list.grants));
            Ok(())
        }
        GrantCommand::Show { id, admin } => {
            let answer = AdminClient::new(&admin)?.get(&format!("/v1/grants/{id}"))?;
            if admin.json {
                return admin_client::print_json(&answer);
            }
            let grant: GrantView = admin_client::view(answer, "grant")?;
            print!("{}", show(&grant));
            Ok(())
        }
        GrantCommand::Validate { id, admin } => {
            let answer =
                AdminClient::new(&admin)?.post(&format!("/v1/grants/{id}/validate"), &json!({}))?;
            if admin.json {
                return admin_client::print_json(&answer);
            }
            let grant: GrantView = admin_client::view(answer, "grant")?;
            println!(
                "validated: grant {} by {}, expires {}",
                grant.id,
                grant.validated_by.as_deref().unwrap_or("?"),
                admin_client::short_time(grant.expires_at)
            );
            Ok(())
        }
        GrantCommand::Revoke { id, reason, admin } => {
            let answer = AdminClient::new(&admin)?.post(
                &format!("/v1/grants/{id}/revoke"),
                &json!({ "reason": reason }),
            )?;
            if admin.json {
                return admin_client::print_json(&answer);
            }
            let grant: GrantView = admin_client::view(answer, "grant")?;
            let when = grant.ending.as_ref().map_or_else(String::new, |e| {
                format!(" at {}", admin_client::short_time(e.at))
            });
            println!("revoked: grant {}{when}", grant.id);
            Ok(())
        }
    }
}

/// `GET /v1/grants`.
#[derive(Deserialize)]
struct GrantList {
    grants: Vec<GrantView>,
}

/// A grant as the admin API shows it (without its token); identities stay text.
#[derive(Deserialize)]
struct GrantView {
    id: GrantId,
    request_id: RequestId,
    grantee: String,
    grantee_jurisdiction: String,
    holder: String,
    scope: ScopeView,
    #[serde(default)]
    quotas: Quotas,
    #[serde(default)]
    used_bytes: u64,
    #[serde(default)]
    used_transfers: u64,
    #[serde(default)]
    approvers: Vec<String>,
    issued_at: Timestamp,
    expires_at: Timestamp,
    validation_due: Option<Timestamp>,
    validated_by: Option<String>,
    state: GrantState,
    ending: Option<EndingView>,
}

#[derive(Deserialize)]
struct EndingView {
    cause: Cause,
    at: Timestamp,
    by: Option<String>,
    reason: Option<String>,
}

fn grants_table(grants: &[GrantView]) -> String {
    let rows: Vec<Vec<String>> = grants
        .iter()
        .map(|g| {
            vec![
                g.id.to_string(),
                g.state.as_str().to_owned(),
                g.grantee.clone(),
                g.scope.categories.join(","),
                admin_client::short_time(g.expires_at),
                g.ending
                    .as_ref()
                    .map_or("-", |e| e.cause.as_str())
                    .to_owned(),
            ]
        })
        .collect();
    admin_client::table(
        &["ID", "STATE", "GRANTEE", "CATEGORIES", "EXPIRES", "CAUSE"],
        &rows,
    )
}

fn show(g: &GrantView) -> String {
    let used = |used: u64, max: Option<u64>| match max {
        Some(max) => format!("{used} of {max}"),
        None => format!("{used} (no limit)"),
    };
    let mut pairs = vec![
        ("id", g.id.to_string()),
        ("request", g.request_id.to_string()),
        ("state", g.state.as_str().to_owned()),
        (
            "grantee",
            format!("{} ({})", g.grantee, g.grantee_jurisdiction),
        ),
        ("holder", g.holder.clone()),
        ("issued", admin_client::short_time(g.issued_at)),
        ("expires", admin_client::short_time(g.expires_at)),
        ("bytes", used(g.used_bytes, g.quotas.max_bytes)),
        ("transfers", used(g.used_transfers, g.quotas.max_transfers)),
        ("approvers", g.approvers.join(", ")),
    ];
    if let Some(due) = g.validation_due {
        let status = match &g.validated_by {
            Some(by) => format!("validated by {by}"),
            None => "not yet validated".to_owned(),
        };
        pairs.push((
            "validation due",
            format!("{}  ({status})", admin_client::short_time(due)),
        ));
    }
    pairs.extend(scope_fields(&g.scope));
    if let Some(ending) = &g.ending {
        let by = ending.by.as_deref().unwrap_or("the gateway");
        pairs.push((
            "ended",
            format!(
                "{} at {} by {by}",
                ending.cause.as_str(),
                admin_client::short_time(ending.at)
            ),
        ));
        if let Some(reason) = &ending.reason {
            pairs.push(("reason", reason.clone()));
        }
    }
    admin_client::fields(&pairs)
}
