"""Repository-level pytest configuration.

The plugin itself is loaded through its `pytest11` entry point, so nothing here is
needed to use it; this file only keeps a bare `pytest` at the repository root from
collecting the helper scripts and the data folders.
"""

collect_ignore = ["tools", "fixtures", "src"]
