//! The identifiers of the exchange's records: random (v4) UUIDs, written as
//! their canonical text in JSON, the store and the audit log.
//!
//! A leaf, so that a request can name its grant and a grant its request
//! without the two modules importing each other.

/// A random (v4) UUID identifier with `new`, `FromStr`, `Display` and serde.
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub struct $name(uuid::Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(uuid::Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A grant; the `jti` of its token.
    GrantId
);

uuid_id!(
    /// A data-subject notice; also the idempotency key of its delivery.
    NoticeId
);

uuid_id!(
    /// A filed request.
    RequestId
);

uuid_id!(
    /// One transfer: one payload that crosses the border under a grant.
    TransferId
);
