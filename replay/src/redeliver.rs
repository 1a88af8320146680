//! Re-delivery of a time range through a subscription (being built).
