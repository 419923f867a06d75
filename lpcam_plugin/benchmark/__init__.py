"""The benchmark that judges the family (``lpcam demo``, the command in :mod:`lpcam_plugin.cli.demo`).

- ``parts``: textures, the three-part object, placement, and the part library that the pretraining
  corpus and the papers' regime share; ``synthetic``: the seeded synthetic WSSS data generator
  (regime A, and regime B, the papers' regime);
- ``pretraining``: the 64-class corpus, pretraining the backbones, the shipped backbones (``weights/``);
- ``toynet``: the toy classifiers; ``training``: training them, their features and checkpoints;
- ``config``: what a run is (networks, seeds, settings) and what one (network, seed) yields;
- ``fits`` and ``readouts``: the estimators the rows share, and the rows (one per read-out of
  :mod:`lpcam_plugin.methods.readouts`);
- ``run``: one (network, seed): classifier, features, every row's maps, the threshold sweep;
- ``report``, ``figures`` (drawn with ``viz``): the summaries, ``report.md``, ``results.json``, PNGs;
- ``demo``: :func:`~lpcam_plugin.benchmark.demo.run_demo`, which ties them together for one regime;
  ``regimes``: both regimes side by side (:func:`~lpcam_plugin.benchmark.regimes.run_regimes`).

It imports methods and plumbing; only the command line imports it back.
"""
