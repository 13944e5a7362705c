//! The connectivity-check attributes of ICE (RFC 8445 §16.1).

int_attribute!(
    /// PRIORITY: the priority a peer-reflexive candidate learned from this check would get
    /// (RFC 8445 §7.1.1).
    Priority(u32), PRIORITY
);

flag_attribute!(
    /// USE-CANDIDATE: the controlling agent nominates this pair (RFC 8445 §7.1.2).
    UseCandidate, USE_CANDIDATE
);

int_attribute!(
    /// ICE-CONTROLLED: the sender is controlled; the value is its tie-breaker (RFC 8445 §7.1.3).
    IceControlled(u64), ICE_CONTROLLED
);

int_attribute!(
    /// ICE-CONTROLLING: the sender is controlling; the value is its tie-breaker
    /// (RFC 8445 §7.1.3).
    IceControlling(u64), ICE_CONTROLLING
);
