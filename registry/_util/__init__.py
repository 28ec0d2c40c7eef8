"""Private leaf helpers of every layer: atomic writes, bounded JSON, h5 and file readers, options, ranges, DDP."""
