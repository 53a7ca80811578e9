"""Why did this miss? For an executed action, what changed against the most recent
earlier action that produced the same thing.

- ``history.py``: remembers, per "thing produced", the actions executed for it.
  "The same thing" is the same target, mnemonic, configuration and output paths
  when the client sends them in RequestMetadata (Bazel 4.2.3 does), else (or when
  that finds nothing, as after a flag changed the configuration) the same output
  paths of the Command.
- ``diff.py``: the difference of two actions: arguments, environment, platform,
  and which input files differ, walking both input trees from the root down and
  skipping every subtree whose digest is the same.
- ``explainer.py``: joins them for the console's ``/explain/NAME`` page and the
  ``/api/explain/NAME`` JSON.
"""
