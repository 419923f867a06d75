"""The benchmark that judges the family (``lpcam demo``, the command in :mod:`lpcam_plugin.cli.demo`).

- ``synthetic``: the seeded synthetic WSSS data generator;
- ``toynet``: the toy classifiers; ``training``: training them, their features and checkpoints;
- ``config``: what a run is (networks, seeds, settings) and what one (network, seed) yields;
- ``fits`` and ``readouts``: the estimators the rows share, and the rows (one per read-out of
  :mod:`lpcam_plugin.methods.readouts`);
- ``run``: one (network, seed): classifier, features, every row's maps, the threshold sweep;
- ``report``, ``figures`` (drawn with ``viz``): the summaries, ``report.md``, ``results.json``, PNGs;
- ``demo``: :func:`~lpcam_plugin.benchmark.demo.run_demo`, which ties them together.

It imports methods and plumbing; only the command line imports it back.
"""
