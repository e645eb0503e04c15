"""The pure core: data, names, config, planning.

Nothing in this package performs I/O, starts a process or imports trio; every function here is a
function of its arguments, so it is tested without filesystems and reused by every adapter.
"""
