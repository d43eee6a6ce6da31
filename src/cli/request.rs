//! `xborder request list|show|approve|deny`: review filed requests on the
//! admin listener.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::admin_client::{self, AdminArgs, AdminClient};
use crate::clock::Timestamp;
use crate::grant::GrantId;
use crate::policy::Finding;
use crate::request::{Period, RequestId, RequestState, Urgency};

#[derive(clap::Subcommand)]
pub enum RequestCommand {
    /// List filed requests with their response deadlines.
    List {
        /// Only requests in this state: pending, approved, denied, refused.
        #[arg(long, value_name = "STATE")]
        state: Option<RequestState>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one request: its scope, policy findings and approvals.
    Show {
        /// The request's ID (a UUID).
        id: RequestId,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Approve a pending request; the last approval needed creates the grant.
    Approve {
        /// The request's ID (a UUID).
        id: RequestId,
        /// How long the grant lasts, e.g. `7d` (default: the longest the policy allows).
        #[arg(long, value_parser = duration_text)]
        lifetime: Option<String>,
        /// At most this many bytes may cross under the grant.
        #[arg(long, value_name = "N")]
        max_bytes: Option<u64>,
        /// At most this many transfers under the grant.
        #[arg(long, value_name = "N")]
        max_transfers: Option<u64>,
        /// Defer the data subjects' notification by this long after the grant
        /// is issued, e.g. `30d`, `0s` for at once (default: the longest the
        /// policy allows).
        #[arg(long, value_parser = deferral_text)]
        notify_after: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Deny a pending request, with the reason the requester will be given.
    Deny {
        /// The request's ID (a UUID).
        id: RequestId,
        /// Why it is denied: the requester is shown it; the audit log keeps
        /// its SHA-256.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

pub fn run(cmd: RequestCommand) -> anyhow::Result<()> {
    match cmd {
        RequestCommand::List { state, admin } => {
            let path = match state {
                Some(state) => format!("/v1/requests?state={}", state.as_str()),
                None => "/v1/requests".to_owned(),
            };
            let answer = AdminClient::new(&admin)?.get(&path)?;
            if admin.json {
                return admin_client::print_json(&answer);
            }
            let list: RequestList = admin_client::view(answer, "request list")?;
            if list.requests.is_empty() {
                println!("no requests");
                return Ok(());
            }
            print!("{}", requests_table(&list.requests));
            Ok(())
        }
        RequestCommand::Show { id, admin } => {
            let answer = AdminClient::new(&admin)?.get(&format!("/v1/requests/{id}"))?;
            if admin.json {
                return admin_client::print_json(&answer);
            }
            let request: RequestView = admin_client::view(answer, "request")?;
            print!("{}", show(&request));
            Ok(())
        }
        RequestCommand::Approve {
            id,
            lifetime,
            max_bytes,
            max_transfers,
            notify_after,
            admin,
        } => {
            let mut body = Map::new();
            if let Some(lifetime) = lifetime {
                body.insert("lifetime".into(), json!(lifetime));
            }
            if let Some(deferral) = notify_after {
                body.insert("notify_after".into(), json!(deferral));
            }
            if let Some(n) = max_bytes {
                body.insert("max_bytes".into(), json!(n));
            }
            if let Some(n) = max_transfers {
                body.insert("max_transfers".into(), json!(n));
            }
            let answer = AdminClient::new(&admin)?
                .post(&format!("/v1/requests/{id}/approve"), &Value::Object(body))?;
            if admin.json {
                return admin_client::print_json(&answer);
            }
            let approved: ApproveAnswer = admin_client::view(answer, "approval answer")?;
            match approved {
                ApproveAnswer::Pending {
                    approvals,
                    required,
                } => {
                    println!("approval recorded: {approvals} of {required} distinct approvers");
                }
                ApproveAnswer::Approved { grant } => {
                    println!(
                        "approved: grant {}, expires {}",
                        grant.id,
                        admin_client::short_time(grant.expires_at)
                    );
                }
            }
            Ok(())
        }
        RequestCommand::Deny { id, reason, admin } => {
            let answer = AdminClient::new(&admin)?.post(
                &format!("/v1/requests/{id}/deny"),
                &json!({ "reason": reason }),
            )?;
            if admin.json {
                return admin_client::print_json(&answer);
            }
            let request: RequestView = admin_client::view(answer, "request")?;
            println!(
                "denied: request {} ({})",
                request.id,
                request.reason.as_deref().unwrap_or(reason.as_str())
            );
            Ok(())
        }
    }
}

/// Checks a lifetime before it is sent; the gateway checks it against policy.
fn duration_text(text: &str) -> Result<String, String> {
    crate::clock::parse_duration(text).map(|_| text.to_owned())
}

/// Checks a deferral before it is sent (zero is allowed: notify at once).
fn deferral_text(text: &str) -> Result<String, String> {
    humantime::parse_duration(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. \"30d\""))
}

/// `GET /v1/requests`.
#[derive(Deserialize)]
struct RequestList {
    requests: Vec<RequestView>,
}

/// A request as the admin API shows it; identities stay text, as sent.
#[derive(Deserialize)]
struct RequestView {
    id: RequestId,
    requester: String,
    requester_jurisdiction: String,
    holder: String,
    scope: ScopeView,
    state: RequestState,
    findings: Vec<Finding>,
    policy_hash: String,
    filed_at: Timestamp,
    deadline: Timestamp,
    #[serde(default)]
    approvals: Vec<ApprovalView>,
    decided_at: Option<Timestamp>,
    decided_by: Option<String>,
    reason: Option<String>,
    grant_id: Option<GrantId>,
    #[serde(default)]
    overdue: bool,
}

/// What a request asks for (and a grant covers), as the admin API shows it.
#[derive(Deserialize)]
pub(super) struct ScopeView {
    pub legal_basis: String,
    pub purpose: String,
    pub categories: Vec<String>,
    pub targets: Vec<String>,
    pub period: Period,
    pub urgency: Urgency,
    pub recipient: String,
    pub justification: String,
}

#[derive(Deserialize)]
struct ApprovalView {
    approver: String,
    at: Timestamp,
}

/// `POST /v1/requests/{id}/approve`.
#[derive(Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum ApproveAnswer {
    Pending { approvals: u32, required: u32 },
    Approved { grant: GrantSummary },
}

#[derive(Deserialize)]
struct GrantSummary {
    id: GrantId,
    expires_at: Timestamp,
}

fn requests_table(requests: &[RequestView]) -> String {
    let rows: Vec<Vec<String>> = requests
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.state.as_str().to_owned(),
                r.requester.clone(),
                r.scope.categories.join(","),
                admin_client::short_time(r.filed_at),
                admin_client::short_time(r.deadline),
                if r.overdue { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    admin_client::table(
        &[
            "ID",
            "STATE",
            "REQUESTER",
            "CATEGORIES",
            "FILED",
            "DEADLINE",
            "OVERDUE",
        ],
        &rows,
    )
}

fn show(r: &RequestView) -> String {
    let mut deadline = admin_client::short_time(r.deadline);
    if r.overdue {
        deadline.push_str("  (OVERDUE)");
    }
    let mut pairs = vec![
        ("id", r.id.to_string()),
        ("state", r.state.as_str().to_owned()),
        (
            "requester",
            format!("{} ({})", r.requester, r.requester_jurisdiction),
        ),
        ("holder", r.holder.clone()),
        ("filed", admin_client::short_time(r.filed_at)),
        ("deadline", deadline),
    ];
    pairs.extend(scope_fields(&r.scope));
    pairs.push(("policy", short_hash(&r.policy_hash)));
    if let Some(at) = r.decided_at {
        let by = r.decided_by.as_deref().unwrap_or("the gateway");
        pairs.push((
            "decided",
            format!("{} by {by}", admin_client::short_time(at)),
        ));
    }
    if let Some(reason) = &r.reason {
        pairs.push(("reason", reason.clone()));
    }
    if let Some(grant) = r.grant_id {
        pairs.push(("grant", grant.to_string()));
    }
    let mut out = admin_client::fields(&pairs);
    out.push_str("\nfindings:\n");
    for finding in &r.findings {
        out.push_str(&format!("  {finding}\n"));
    }
    out.push_str("\napprovals:\n");
    if r.approvals.is_empty() {
        out.push_str("  none\n");
    }
    for a in &r.approvals {
        out.push_str(&format!(
            "  {}  {}\n",
            admin_client::short_time(a.at),
            a.approver
        ));
    }
    out
}

/// Key/value lines for a scope, shared with `grant show`.
pub(super) fn scope_fields(scope: &ScopeView) -> Vec<(&'static str, String)> {
    const SHOWN_TARGETS: usize = 10;
    let mut targets = scope
        .targets
        .iter()
        .take(SHOWN_TARGETS)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if scope.targets.len() > SHOWN_TARGETS {
        targets.push_str(&format!(", … ({} in all)", scope.targets.len()));
    }
    vec![
        ("legal basis", scope.legal_basis.clone()),
        ("purpose", scope.purpose.clone()),
        ("categories", scope.categories.join(", ")),
        ("targets", targets),
        (
            "period",
            format!(
                "{} to {}",
                admin_client::short_time(scope.period.from),
                admin_client::short_time(scope.period.to)
            ),
        ),
        ("urgency", scope.urgency.as_str().to_owned()),
        ("recipient", scope.recipient.clone()),
        ("justification", scope.justification.clone()),
    ]
}

/// The first 12 hex digits of a policy hash: enough to tell policies apart.
pub(super) fn short_hash(hash: &str) -> String {
    if hash.is_empty() {
        "none (no policy for the pair)".to_owned()
    } else {
        hash.chars().take(12).collect()
    }
}
