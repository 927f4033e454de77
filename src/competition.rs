//! Co-firing statistics for the compete stage (being written).
