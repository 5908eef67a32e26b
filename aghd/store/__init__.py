"""The store: all SQL lives in this package, in layers (bottom first):
``schema``; ``db``; ``models``, ``sessions``, ``workspaces``; ``events``;
``rows`` (lookups); ``graph`` (the blocking rule); ``progress`` (what
follows from it); ``tasks``; ``claims`` and ``leases``; ``workflows``,
``cycle``, ``coordination``, ``observe`` and ``retention``. A module imports
only modules of its own layer or below (tests/test_architecture.py checks it
against STORE_LAYERS)."""
