"""Offline FOSP agent: world model, critics, reachability estimation, Lagrangian.

Modules, read in this order:
- ``config``: ``AgentConfig`` (every hyperparameter of Table 4 / App. B-C), presets
  ``paper()`` and ``cpu()``, ``config_by_name``.
- ``math``: the paper's equations as pure tensor functions (symlog / two-hot, expectile
  loss eq. 7, TD(lambda) eq. 8, REF target eq. 30, augmented Lagrangian eq. 17 / 27, AWR
  weights and actor loss eq. 19 / 20 / 23, return normalisation).
- ``networks``: MLP, image encoder / decoder, two-hot, Bernoulli and actor heads.
- ``world_model``: the RSSM and the world-model loss of eq. 1.
- ``replay``: uniform random windows over trajectories, with a resumable generator.
- ``actor_critic``: imagination, in-sample critics (eq. 7-11), REF (eq. 30), augmented
  Lagrangian (eq. 17, 27), AWR actor (eq. 19-20); baselines and ablations by ``algo``.
- ``agent``: world model + actor-critic + optimisers; ``train_step`` and ``act``.
"""
