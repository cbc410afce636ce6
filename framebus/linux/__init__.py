"""The kernel-facing layer: thin, typed wrappers over Linux interfaces.

Nothing here knows about frames, leases or consumers; the friendly API in
`framebus` is built on top and never reaches around it.
"""
