"""framebus: a zero-copy shared-memory frame bus for Linux."""
