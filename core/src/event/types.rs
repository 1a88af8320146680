//! The closed set of event types, named as S3 names them where S3 has a name.

use std::fmt;

macro_rules! event_types {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        /// What happened to an object (or bucket, or the system).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType { $($variant),+ }

        impl EventType {
            /// Every type, in declaration order.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),+];

            /// The wire name, e.g. `ObjectCreated:Put`.
            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$variant => $name),+ }
            }

            /// Parse a wire name; `None` for names this build does not know.
            pub fn parse(name: &str) -> Option<EventType> {
                match name { $($name => Some(EventType::$variant),)+ _ => None }
            }
        }
    };
}

event_types! {
    ObjectCreatedPut => "ObjectCreated:Put",
    ObjectCreatedCopy => "ObjectCreated:Copy",
    ObjectCreatedCompleteMultipartUpload => "ObjectCreated:CompleteMultipartUpload",
    ObjectRemovedDelete => "ObjectRemoved:Delete",
    ObjectRemovedDeleteMarkerCreated => "ObjectRemoved:DeleteMarkerCreated",
    ObjectTaggingPut => "ObjectTagging:Put",
    ObjectTaggingDelete => "ObjectTagging:Delete",
    ObjectMetadataUpdate => "ObjectMetadata:Update",
    LifecycleTransition => "LifecycleTransition",
    LifecycleExpirationDelete => "LifecycleExpiration:Delete",
    ObjectAccessedGet => "ObjectAccessed:Get",
    ObjectAccessedHead => "ObjectAccessed:Head",
    ObjectAccessDenied => "ObjectAccess:Denied",
    BucketCreated => "BucketCreated",
    BucketRemoved => "BucketRemoved",
    BucketConfigChanged => "BucketConfig:Changed",
    SystemHealth => "System:Health",
    SystemCapacity => "System:Capacity",
}

impl EventType {
    /// Whether the event changes the object's state (and so its sequence and the index).
    /// Access events and bucket/system events do not touch an object's state.
    pub fn mutates_object(self) -> bool {
        !matches!(
            self,
            EventType::ObjectAccessedGet
                | EventType::ObjectAccessedHead
                | EventType::ObjectAccessDenied
                | EventType::BucketCreated
                | EventType::BucketRemoved
                | EventType::BucketConfigChanged
                | EventType::SystemHealth
                | EventType::SystemCapacity
        )
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
        }
        assert_eq!(EventType::ALL.len(), 18);
        assert_eq!(EventType::parse("ObjectCreated:*"), None);
    }
}
