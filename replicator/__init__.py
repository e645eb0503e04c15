"""replicator: snapshot ZFS and btrfs on a schedule and replicate the deltas, locally or over ssh."""

__version__ = "0.1.0"
