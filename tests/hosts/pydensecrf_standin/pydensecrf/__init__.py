"""Stand-in for ``pydensecrf`` / ``pydensecrf2`` (tests only): the interface the hosts use.

Like the real Cython module, every array argument must be a writable buffer: a read-only array
(``np.asarray(PIL.Image)``) raises ``ValueError: buffer source array is read-only``.
"""
