"""The benchmark that judges the family: a synthetic WSSS data generator, toy classifiers,
figures and ``lpcam demo``. It imports methods and plumbing; nothing imports it back."""
