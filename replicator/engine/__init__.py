"""Wires the pure core to the adapters: snapshot a job, replicate a job to its targets."""
