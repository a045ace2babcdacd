"""Format-reading machinery shared by the model scanners: streams, limits, the pickle engine."""
