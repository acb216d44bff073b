"""Auto-captioning: one module per provider behind the protocol in `base`, image preparation,
retries, and the pure post-processing functions the caption tools share."""
