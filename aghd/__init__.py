"""aghd: the daemon — server, handlers, store, committer, scheduler."""
