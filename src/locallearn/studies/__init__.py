"""Studies built on the library: the DSD sample-complexity sweep (``dsd_sweep``) and the
shortcut-bias measure (``shortcut``)."""
