"""Host adapters: the method family as drop-in steps of WSSS codebases (IRN, AMN, EDAM, MCTformer).

Public faces, one per host step (import the one you need): :mod:`~lpcam_plugin.adapters.irn`,
:mod:`~lpcam_plugin.adapters.amn` and :mod:`~lpcam_plugin.adapters.pixelsup_train` (the IRN
family, machinery in :mod:`~lpcam_plugin.adapters.resnet`); :mod:`~lpcam_plugin.adapters.edam`,
:mod:`~lpcam_plugin.adapters.edam_fcam` and :mod:`~lpcam_plugin.adapters.edam_pixelsup_train`;
:mod:`~lpcam_plugin.adapters.mctformer` and :mod:`~lpcam_plugin.adapters.mctformer_fcam`.
What several families share is in :mod:`~lpcam_plugin.adapters.common`.

Importing this package loads nothing else: the host code bases are not dependencies and are
imported from the user's fork at run time.
"""
