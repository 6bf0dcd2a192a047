"""dafnet's built-in network components (one module per kind; see :mod:`dafnet.builtins`)."""
