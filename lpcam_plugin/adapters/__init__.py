"""Host adapters: LPCAM as a drop-in CAM step for WSSS codebases (IRN, AMN, EDAM, MCTformer).

Each adapter is its own module (``lpcam_plugin.adapters.irn`` ...); import the one you need.
Importing this package loads nothing else: the host code bases are not dependencies and are
imported from the user's fork at run time.
"""
