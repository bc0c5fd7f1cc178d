"""The composition root: the ``vigil`` command and its sub-commands."""
