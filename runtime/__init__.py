"""runtime: Flows and Works in their own processes, sharing Paths through cas_storage."""
