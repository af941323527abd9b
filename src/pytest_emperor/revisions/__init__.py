"""Revisions of an app: a checkout of one commit of the app's git repository, made beside the user's repository
(never in its working tree, index, branches, stash or worktree list), kept in the user's cache, and prepared by
the project's ``setup`` command. ``git.py`` asks git; ``cache.py`` makes, keeps and removes the checkouts
(docs/revisions.md)."""
