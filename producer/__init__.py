"""The producer daemon and its frame sources (synthetic, v4l2)."""
